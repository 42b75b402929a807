"""Shared fixtures: a tiny dataset and an ordinary LightningModule that knows nothing of federated learning."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_fl.datamodules import InMemoryDataset

warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


class TinyClassifier(pl.LightningModule):
    """What a user already has: automatic optimization, its own optimizer, its own ``self.log`` calls."""

    def __init__(self, in_features: int = 6, num_classes: int = 3, lr: float = 0.1, momentum: float = 0.9,
                 batchnorm: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = [nn.Linear(in_features, 16)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(16))
        layers += [nn.ReLU(), nn.Linear(16, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val/acc", (logits.argmax(-1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)


class LinearLoss(pl.LightningModule):
    """loss = sum_i <w, x_i>: every batch's gradient is sum_i x_i whatever w is, so updates are known in closed
    form."""

    def __init__(self, lr: float = 0.5) -> None:
        super().__init__()
        self.lr = lr
        self.w = torch.nn.Parameter(torch.zeros(2))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        return (x @ self.w).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def make_tiny_data(n: int = 120, in_features: int = 6, num_classes: int = 3, seed: int = 0) -> InMemoryDataset:
    """Linearly separable-ish Gaussian blobs."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    centers = torch.randn(num_classes, in_features, generator=gen) * 2
    x = centers[y] + torch.randn(n, in_features, generator=gen)
    return InMemoryDataset(x, y)


@pytest.fixture
def tiny_data() -> tuple[InMemoryDataset, InMemoryDataset]:
    return make_tiny_data(120, seed=0), make_tiny_data(60, seed=1)


def quiet_trainer_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "reload_dataloaders_every_n_epochs": 1,
        "use_distributed_sampler": False,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    kwargs.update(overrides)
    return kwargs


_DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE",
             "PL_GLOBAL_SEED")


@pytest.fixture(autouse=True)
def _fresh_distributed_env(monkeypatch):
    """Lightning writes MASTER_PORT and friends into os.environ; a later test reusing that port can collide."""
    for name in _DIST_ENV:
        monkeypatch.delenv(name, raising=False)
