"""Algorithms with per-client state on two processes end where one process ends, checkpoints included."""

from __future__ import annotations

import csv

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, make_tiny_data, quiet_trainer_kwargs
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from lightning_fl import (
    FederatedAveraging,
    FederatedDataModule,
    FederatedDDPStrategy,
    MaliciousClients,
    PersonalizedEvaluation,
    PersonalLayers,
    Scaffold,
)
from lightning_fl.datamodules import DirichletPartitioner
from lightning_fl.server import TrimmedMeanAggregator

ROUNDS = 3


def run(tmp_path, devices: int):
    torch.manual_seed(0)
    model = TinyClassifier(momentum=0.0)
    dm = FederatedDataModule(make_tiny_data(160, seed=0), make_tiny_data(40, seed=1),
                             partitioner=DirichletPartitioner(num_clients=8, alpha=1.0, seed=0), clients_per_round=5,
                             batch_size=8, local_val_fraction=0.25, seed=7)
    callbacks = [
        FederatedAveraging(aggregator=TrimmedMeanAggregator(beta=0.2)),
        Scaffold(),
        PersonalLayers(["net.2"]),
        MaliciousClients(fraction=0.25, attack="sign_flip"),
        PersonalizedEvaluation(every_n_rounds=ROUNDS, finetune_steps=2),
        ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_last=True),
    ]
    kwargs = {"strategy": FederatedDDPStrategy(start_method="spawn")} if devices > 1 else {}
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=ROUNDS, devices=devices, callbacks=callbacks,
                                                enable_checkpointing=True, logger=CSVLogger(tmp_path, name="log"),
                                                **kwargs))
    trainer.fit(model, datamodule=dm)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=False)
    with open(tmp_path / "log" / "version_0" / "metrics.csv") as f:
        personal = [float(row["personal/acc"]) for row in csv.DictReader(f) if row.get("personal/acc")]
    return model, checkpoint["callbacks"], personal


def as_list(value):
    return [value] if isinstance(value, torch.Tensor) else list(value)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_equal_one_process(tmp_path):
    one_model, one_state, one_personal = run(tmp_path / "one", 1)
    two_model, two_state, two_personal = run(tmp_path / "two", 2)
    for (name, a), b in zip(one_model.state_dict().items(), two_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    for key, field in (("Scaffold", "client_controls"), ("PersonalLayers", "client_tensors")):
        one, two = one_state[key][field], two_state[key][field]
        assert sorted(one) == sorted(two) and len(one) > 2, key  # every client's state, gathered from its owner
        for client in one:
            for a, b in zip(as_list(one[client]), as_list(two[client]), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(one_state["Scaffold"]["server_control"], two_state["Scaffold"]["server_control"],
                               rtol=1e-5, atol=1e-6)
    assert len(one_personal) == 1 and one_personal == pytest.approx(two_personal, abs=1e-6)
