"""A FederatedDataModule fitted without a server is refused at setup, naming the callback to add."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
from conftest import TinyClassifier, quiet_trainer_kwargs
from pytorch_lightning.callbacks import LearningRateMonitor

from lightning_fl import FederatedConfigError, FederatedDataModule
from lightning_fl.datamodules import IIDPartitioner


def test_fit_without_the_server_callback_is_refused(tiny_data):
    dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=4), clients_per_round=2)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=[LearningRateMonitor()]))
    model = TinyClassifier()
    before = [p.detach().clone() for p in model.parameters()]
    match = r"add the server callback.*FederatedAveraging\(\).*callbacks \[.*LearningRateMonitor.*\] and module Tiny"
    with pytest.raises(FederatedConfigError, match=match):
        trainer.fit(model, datamodule=dm)
    assert all(bool((a == b).all()) for a, b in zip(before, model.parameters(), strict=True))  # nothing trained


def test_setup_outside_a_fit_needs_no_server(tiny_data):
    dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=4), clients_per_round=2)
    dm.setup("fit")  # no trainer: plain use of the data module stays possible
    assert dm.num_clients == 4
