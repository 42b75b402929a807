"""Resuming on another data configuration than the checkpoint's is an error naming what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, make_tiny_data, quiet_trainer_kwargs
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_fl import FederatedAveraging, FederatedDataModule
from lightning_fl.datamodules import DirichletPartitioner
from lightning_fl.exceptions import CheckpointError

BASE: dict[str, Any] = {"num_clients": 6, "alpha": 0.5, "clients_per_round": 2, "batch_size": 10, "seed": 1}


def fit(root: Path, rounds: int, ckpt_path: Path | None = None, n: int = 120, data_seed: int = 0,
        **changes: Any) -> FederatedAveraging:
    cfg = {**BASE, **changes}
    torch.manual_seed(0)
    dm = FederatedDataModule(make_tiny_data(n, seed=data_seed), make_tiny_data(30, seed=1),
                             partitioner=DirichletPartitioner(num_clients=cfg["num_clients"], alpha=cfg["alpha"],
                                                              seed=0),
                             clients_per_round=cfg["clients_per_round"], batch_size=cfg["batch_size"],
                             seed=cfg["seed"])
    fedavg = FederatedAveraging()
    ckpt = ModelCheckpoint(dirpath=root, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                           auto_insert_metric_name=False)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[fedavg, ckpt], enable_checkpointing=True))
    trainer.fit(TinyClassifier(), datamodule=dm, ckpt_path=None if ckpt_path is None else str(ckpt_path))
    return fedavg


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fingerprint")
    fit(root, rounds=1)
    return root / "round0.ckpt"


def test_same_configuration_resumes(tmp_path, saved):
    assert fit(tmp_path, rounds=2, ckpt_path=saved).rounds_completed == 2


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"num_clients": 4}, r"num_clients: checkpoint 6, now 4"),
        ({"alpha": 5.0}, r"partitioner.alpha: checkpoint 0.5, now 5.0"),
        ({"n": 90}, r"dataset_size: checkpoint 120, now 90"),
        ({"seed": 2}, r"seed: checkpoint 1, now 2"),
        ({"clients_per_round": 3}, r"clients_per_round: checkpoint 2, now 3"),
        ({"batch_size": 20}, r"batch_size: checkpoint 10, now 20"),
        ({"data_seed": 3}, r"the partition \(which samples each client holds\): the training data's content"),
    ],
)
def test_changed_configuration_is_refused_naming_the_change(tmp_path, saved, changes, named):
    expected = rf"round0.ckpt': it was written for another data configuration \(.*{named}"
    with pytest.raises(CheckpointError, match=expected):
        fit(tmp_path, rounds=2, ckpt_path=saved, **changes)


def test_validating_a_checkpoint_on_other_training_settings_is_no_resume(saved):
    """Only fit resumes: validate/test from a checkpoint evaluate its weights, whatever the training settings."""
    dm = FederatedDataModule(make_tiny_data(120, seed=0), make_tiny_data(30, seed=1),
                             partitioner=DirichletPartitioner(num_clients=4, alpha=0.5, seed=0), clients_per_round=2,
                             batch_size=32)
    trainer = pl.Trainer(**quiet_trainer_kwargs(callbacks=[FederatedAveraging()]))
    metrics = trainer.validate(TinyClassifier(), datamodule=dm, ckpt_path=str(saved))
    assert metrics and "val/acc" in metrics[0]
