"""A plain ``pl.Trainer`` needs no federated flag: the loader is rebuilt every round by the runtime, the plan
travels with it, and only settings that conflict are refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, make_tiny_data
from torch.utils.data import DataLoader, Dataset

from lightning_fl import FederatedAveraging, FederatedConfigError, FederatedDataModule, FederatedRuntimeError
from lightning_fl.datamodules import IIDPartitioner
from lightning_fl.datamodules.loaders import RoundLoader, round_plan_of

PLAIN = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
         "enable_model_summary": False}


class RecordPlans(pl.Callback):
    def __init__(self) -> None:
        self.clients: list[list[int]] = []
        self.batches: list[int] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clients.append(round_plan_of(trainer).clients.tolist())
        self.batches.append(0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.batches[-1] += 1


def data_module(**kwargs: Any) -> FederatedDataModule:
    return FederatedDataModule(make_tiny_data(96, seed=0), partitioner=IIDPartitioner(num_clients=8, seed=0),
                               clients_per_round=3, batch_size=8, seed=5, **kwargs)


def test_a_plain_trainer_trains_a_new_set_of_clients_every_round():
    dm, record = data_module(), RecordPlans()
    trainer = pl.Trainer(max_epochs=3, callbacks=[FederatedAveraging(), record], **PLAIN)
    trainer.fit(TinyClassifier(), datamodule=dm)
    reference = data_module()
    reference.setup("fit")
    assert record.clients == [reference.plan_round(r).clients.tolist() for r in range(3)]
    assert len({tuple(c) for c in record.clients}) == 3  # three different client sets
    assert record.batches == [reference.plan_round(r).num_batches for r in range(3)]
    assert trainer.reload_dataloaders_every_n_epochs == 1  # set by the runtime
    assert isinstance(trainer.train_dataloader, RoundLoader)


def test_reloading_every_other_epoch_is_refused_naming_the_flag():
    trainer = pl.Trainer(max_epochs=2, reload_dataloaders_every_n_epochs=2, callbacks=[FederatedAveraging()], **PLAIN)
    with pytest.raises(FederatedConfigError, match=r"reload_dataloaders_every_n_epochs must be 1 .*got 2"):
        trainer.fit(TinyClassifier(), datamodule=data_module())


def test_distributed_sampler_flag_and_worker_processes_work(monkeypatch):
    iterated = []
    original = DataLoader.__iter__

    def counted(self: DataLoader) -> Any:
        iterated.append(1)
        return original(self)

    monkeypatch.setattr(DataLoader, "__iter__", counted)
    dm, record = data_module(num_workers=2), RecordPlans()
    trainer = pl.Trainer(max_epochs=2, use_distributed_sampler=True, callbacks=[FederatedAveraging(), record],
                         **PLAIN)
    trainer.fit(TinyClassifier(), datamodule=dm)
    assert record.batches == [dm.plan_round(r).num_batches for r in range(2)]
    assert len(iterated) == 2  # one worker start per round: Lightning's iter() probe started none


class ForeignLoader(FederatedDataModule):
    def train_dataloader(self) -> Any:
        dataset: Dataset = self.train_dataset  # type: ignore[assignment]
        return DataLoader(dataset, batch_size=8)


def test_a_train_loader_that_is_not_the_data_modules_is_refused():
    dm = ForeignLoader(make_tiny_data(48, seed=0), partitioner=IIDPartitioner(num_clients=4), clients_per_round=2)
    trainer = pl.Trainer(max_epochs=1, callbacks=[FederatedAveraging()], **PLAIN)
    model = TinyClassifier()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FederatedRuntimeError, match=r"train loader must be the FederatedDataModule's.*DataLoader"):
        trainer.fit(model, datamodule=dm)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_round_plan_of_refuses_a_stale_plan():
    dm = data_module()
    dm.setup("fit")
    plan = dm.plan_round(0)

    class Stub:
        current_epoch = 1
        train_dataloader = RoundLoader(plan, [np.zeros(1)])

    with pytest.raises(FederatedRuntimeError, match="plan of round 0, but the Trainer runs round 1"):
        round_plan_of(Stub())


def test_train_dataloaders_without_the_data_module_are_refused():
    trainer = pl.Trainer(max_epochs=1, callbacks=[FederatedAveraging()], **PLAIN)
    loader = DataLoader(make_tiny_data(16, seed=0), batch_size=8)
    with pytest.raises(FederatedConfigError, match=r"datamodule must be a lightning_fl FederatedDataModule.*got no"):
        trainer.fit(TinyClassifier(), train_dataloaders=loader)
