"""Every Trainer setting that would silently train the wrong thing is refused before training starts."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
from conftest import TinyClassifier, quiet_trainer_kwargs
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy

from lightning_fl import FederatedAveraging, FederatedConfigError, FederatedDataModule
from lightning_fl.datamodules import IIDPartitioner


def fit(tiny_data, **trainer_overrides):
    dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=4), clients_per_round=2)
    callbacks = trainer_overrides.pop("callbacks", [])
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=[FederatedAveraging(), *callbacks],
                                                **trainer_overrides))
    trainer.fit(TinyClassifier(), datamodule=dm)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"reload_dataloaders_every_n_epochs": 2}, r"reload_dataloaders_every_n_epochs must be 1 .*got 2"),
        ({"accumulate_grad_batches": 2}, r"accumulate_grad_batches must be 1.*got 2"),
        ({"limit_train_batches": 0.5}, r"limit_train_batches must be 1.0.*got 0.5"),
        ({"limit_train_batches": 1}, r"limit_train_batches must be 1.0.*got 1$"),
        ({"val_check_interval": 0.5}, r"val_check_interval must be 1.0.*got 0.5"),
        ({"max_steps": 10}, r"max_steps must be -1.*got 10"),
        ({"enable_checkpointing": True, "callbacks": [ModelCheckpoint(every_n_train_steps=3)]},
         r"every_n_train_steps.*middle of a round.*got every_n_train_steps=3"),
        ({"strategy": DDPStrategy()}, r"strategy must be single-device or lightning_fl's FederatedDDPStrategy"),
    ],
)
def test_bad_trainer_settings_are_refused(tiny_data, overrides, match):
    with pytest.raises(FederatedConfigError, match=match):
        fit(tiny_data, **overrides)


@pytest.mark.parametrize("overrides", [{"reload_dataloaders_every_n_epochs": 0}, {"use_distributed_sampler": True}])
def test_the_formerly_required_flags_are_not_needed(tiny_data, overrides):
    fit(tiny_data, **overrides)  # issue 12: reload is set by the runtime, and no sampler enters a RoundLoader


def test_plain_datamodule_is_refused(tiny_data):
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=[FederatedAveraging()]))
    loader = pl.LightningDataModule.from_datasets(tiny_data[0], batch_size=8)
    with pytest.raises(FederatedConfigError, match="datamodule must be a lightning_fl FederatedDataModule"):
        trainer.fit(TinyClassifier(), datamodule=loader)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"aggregation": "median"}, "aggregation must be 'selected' or 'all', got 'median'"),
        ({"server_optimizer": "adam"}, "server_optimizer must be a lightning_fl ServerOptimizer, got str"),
        ({"uplink": 3}, "uplink must be a lightning_fl Codec, got int"),
    ],
)
def test_bad_callback_arguments(kwargs, match):
    with pytest.raises(FederatedConfigError, match=match):
        FederatedAveraging(**kwargs)
