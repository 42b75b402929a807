"""SCAFFOLD's variates are the clients' mean gradients whatever the client optimizer (momentum, Nesterov, Adam)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import LinearLoss, quiet_trainer_kwargs

from lightning_fl import FederatedAveraging, FederatedDataModule, Scaffold
from lightning_fl.datamodules import InMemoryDataset, NaturalPartitioner

OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.5),
    "momentum": lambda params: torch.optim.SGD(params, lr=0.5, momentum=0.9),
    "nesterov+wd": lambda params: torch.optim.SGD(params, lr=0.5, momentum=0.9, nesterov=True, weight_decay=0.1),
    "adam": lambda params: torch.optim.Adam(params, lr=0.1),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.1, weight_decay=0.1),
}


class LinearLossWith(LinearLoss):
    """``loss = sum_i <w, x_i>``: a batch's gradient is the sum of its samples, wherever the optimizer moves ``w``."""

    def __init__(self, optimizer: str) -> None:
        super().__init__()
        self.optimizer = optimizer

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return OPTIMIZERS[self.optimizer](self.parameters())


def linear_dm() -> FederatedDataModule:
    # 4 clients of 5 samples; batches of 2: K = 3 local steps per client
    x = torch.arange(40, dtype=torch.float32).reshape(20, 2) / 10 - 1.0
    data = InMemoryDataset(x, torch.zeros(20, dtype=torch.int64), groups=np.repeat(np.arange(4), 5))
    return FederatedDataModule(data, partitioner=NaturalPartitioner(), clients_per_round=4, batch_size=2, seed=0)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_variates_are_the_mean_gradient_for_every_optimizer(optimizer):
    scaffold, dm = Scaffold(), linear_dm()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=2, callbacks=[FederatedAveraging(), scaffold]))
    trainer.fit(LinearLossWith(optimizer), datamodule=dm)
    x = dm.train_dataset.tensors[0]
    for k in range(4):
        # the mean of the client's 3 batch gradients (its 5 samples' sum / 3), whatever steps the optimizer took
        torch.testing.assert_close(scaffold.client_controls.get(k), x[dm.client_indices[k]].sum(0) / 3)
    # all clients took part in both rounds with the same mean gradients: c moved to their mean and stayed there
    torch.testing.assert_close(scaffold.server_control, x.sum(0) / 12)


class ValAccuracy(pl.Callback):
    def __init__(self) -> None:
        self.last = 0.0

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.last = float(trainer.callback_metrics["val/acc"])


def digits_accuracy(optimizer: str, lr: float, momentum: float, scaffold: bool) -> float:
    from lightning_fl.datamodules import DirichletPartitioner, load_digits_dataset
    from lightning_fl.modules.classifier import ClassifierModule
    from lightning_fl.nn.models import MLP

    train, val = load_digits_dataset(val_fraction=0.2, seed=0)
    dm = FederatedDataModule(train, val, partitioner=DirichletPartitioner(num_clients=10, alpha=0.5, seed=0),
                             clients_per_round=5, batch_size=32, local_epochs=2, seed=0)
    torch.manual_seed(0)
    module = ClassifierModule(backbone=MLP(64, [32], 10), optimizer=optimizer, lr=lr, momentum=momentum,
                              log_train_loss=False)
    accuracy = ValAccuracy()
    callbacks = [FederatedAveraging(), accuracy, *([Scaffold()] if scaffold else [])]
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=4, callbacks=callbacks))
    trainer.fit(module, datamodule=dm)
    return accuracy.last


@pytest.mark.parametrize(("optimizer", "lr", "momentum"), [("adam", 3e-3, 0.0), ("sgd", 0.05, 0.9)])
def test_scaffold_is_no_worse_than_fedavg_with_the_same_optimizer(optimizer, lr, momentum):
    # measured: Adam 0.858 (FedAvg 0.735), SGD momentum 0.858 (FedAvg 0.905); variates taken from the displacement
    # (x - y_i) / (K lr) collapsed both to 0.25
    fedavg = digits_accuracy(optimizer, lr, momentum, scaffold=False)
    scaffold = digits_accuracy(optimizer, lr, momentum, scaffold=True)
    assert scaffold >= fedavg - 0.1, (scaffold, fedavg)
