"""The tiny model, data and callbacks of the checkpoint written before issue 12's move (``data/pre_i12.ckpt``)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_fl import FederatedAveraging, FederatedDataModule, Scaffold
from lightning_fl.codecs import ErrorFeedback, TopK
from lightning_fl.datamodules import IIDPartitioner, InMemoryDataset
from lightning_fl.server import ServerAdam


class OldCheckpointModel(pl.LightningModule):
    """One ``nn.Linear(64, 10)``: a checkpoint of a few kilobytes."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(64, 10)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def old_checkpoint_datamodule() -> FederatedDataModule:
    gen = torch.Generator().manual_seed(0)
    data = InMemoryDataset(torch.randn(60, 64, generator=gen), torch.randint(0, 10, (60,), generator=gen))
    return FederatedDataModule(data, partitioner=IIDPartitioner(num_clients=6, seed=0), clients_per_round=3,
                               batch_size=5, seed=3)


def old_checkpoint_callbacks() -> tuple[FederatedAveraging, Scaffold]:
    fedavg = FederatedAveraging(server_optimizer=ServerAdam(lr=0.05), uplink=ErrorFeedback(TopK(k=8)))
    return fedavg, Scaffold()


def old_checkpoint_trainer_kwargs(max_epochs: int, callbacks: list[pl.Callback]) -> dict[str, Any]:
    return {"max_epochs": max_epochs, "callbacks": callbacks, "reload_dataloaders_every_n_epochs": 1,
            "use_distributed_sampler": False, "accelerator": "cpu", "devices": 1, "logger": False,
            "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
            "num_sanity_val_steps": 0}
