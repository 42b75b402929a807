"""Modules with lazy layers (nn.LazyLinear) are materialised by one dry forward before the global state is built."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import make_tiny_data, quiet_trainer_kwargs
from torch import nn

from lightning_fl import FederatedAveraging, FederatedDataModule
from lightning_fl.datamodules import IIDPartitioner
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.lazy import lazy_tensor_names


class LazyClassifier(pl.LightningModule):
    """A module that leaves its input width to torch: LazyLinear, then BatchNorm, then a head."""

    def __init__(self, example: bool = False, lazy_only_in_validation: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.LazyLinear(16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 3)
        self.probe = nn.LazyLinear(1) if lazy_only_in_validation else None
        if example:
            self.example_input_array = torch.zeros(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        if self.probe is not None:
            self.probe(x)
        self.log("val/acc", (self(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(model: pl.LightningModule, rounds: int = 3, **kwargs: Any) -> pl.Trainer:
    data = make_tiny_data(120, seed=0)
    dm = FederatedDataModule(data, data,
                             partitioner=IIDPartitioner(num_clients=6, seed=0), clients_per_round=3, batch_size=8)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[FederatedAveraging()], **kwargs))
    trainer.fit(model, datamodule=dm)
    return trainer


@pytest.mark.parametrize("example", [False, True], ids=["first-batch", "example-input-array"])
def test_lazy_linear_is_materialised_and_trains(example):
    torch.manual_seed(0)
    model = LazyClassifier(example=example)
    assert lazy_tensor_names(model) == ["body.0.weight", "body.0.bias"]
    trainer = fit(model)
    assert lazy_tensor_names(model) == []
    assert model.body[0].weight.shape == (16, 6)
    assert float(trainer.callback_metrics["val/acc"]) > 0.6  # three blobs: chance is 0.33


def test_the_dry_run_changes_no_batchnorm_statistic_and_is_reproducible():
    torch.manual_seed(0)
    model = LazyClassifier()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=0, callbacks=[FederatedAveraging()]))
    dm = FederatedDataModule(make_tiny_data(120, seed=0), partitioner=IIDPartitioner(num_clients=6, seed=0),
                             clients_per_round=3, batch_size=8)
    trainer.fit(model, datamodule=dm)  # no round: only the fit start
    bn = model.body[1]
    assert lazy_tensor_names(model) == []
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_mean, torch.zeros(16))
    torch.manual_seed(0)
    first = fit(LazyClassifier(), rounds=2).lightning_module.state_dict()
    torch.manual_seed(0)
    second = fit(LazyClassifier(), rounds=2).lightning_module.state_dict()
    for name, value in first.items():
        torch.testing.assert_close(value, second[name], rtol=0, atol=0, msg=name)


def test_a_lazy_layer_the_dry_run_cannot_reach_gets_a_clear_error():
    with pytest.raises(FederatedConfigError, match=r"lazy parameters \['probe.weight', 'probe.bias'\] were not "
                                                   r"materialised .*example_input_array"):
        fit(LazyClassifier(lazy_only_in_validation=True))

