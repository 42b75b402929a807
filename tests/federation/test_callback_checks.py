"""Lightning callbacks that would keep, evaluate or checkpoint a client's weights: supported, or refused at start."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, quiet_trainer_kwargs
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, OnExceptionCheckpoint, StochasticWeightAveraging

from lightning_fl import FederatedAveraging, FederatedConfigError, FederatedDataModule
from lightning_fl.datamodules import IIDPartitioner


def fit(tiny_data, model, callbacks, **overrides):
    dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=4), clients_per_round=2)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=4, callbacks=[FederatedAveraging(), *callbacks],
                                                **overrides))
    trainer.fit(model, datamodule=dm)
    return trainer


class RoundStarts(Callback):
    """The module's parameters at every round start: the global model of the round before."""

    def __init__(self) -> None:
        self.starts: list[torch.Tensor] = []

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.starts.append(torch.cat([p.detach().flatten().clone() for p in pl_module.parameters()]))


def test_swa_with_batchnorm_is_refused_naming_the_callback(tiny_data):
    model = TinyClassifier(batchnorm=True)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FederatedConfigError, match=r"StochasticWeightAveraging is refused for a module with BatchNorm"
                                                   r".*got TinyClassifier with BatchNorm.*extra federated round"):
        fit(tiny_data, model, [StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2)])
    assert all(bool((a == b).all()) for a, b in zip(before, model.parameters(), strict=True))


def test_swa_without_batchnorm_averages_the_global_models(tiny_data):
    starts = RoundStarts()
    model = TinyClassifier()
    trainer = fit(tiny_data, model, [starts, StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2)])
    assert trainer.current_epoch == 4 and len(starts.starts) == 4  # no extra round
    final = torch.cat([p.detach().flatten() for p in model.parameters()])
    # Lightning's schedule: the module at the starts of epochs swa_start - 1 .. max_epochs - 1, i.e. the global
    # models of rounds 0, 1 and 2
    torch.testing.assert_close(final, torch.stack(starts.starts[1:4]).mean(0))


@pytest.mark.parametrize(
    ("callbacks", "overrides", "match"),
    [
        (lambda d: [OnExceptionCheckpoint(dirpath=d)], {"enable_checkpointing": True},
         r"checkpoints on exception are refused, got OnExceptionCheckpoint"),
        (lambda d: [ModelCheckpoint(dirpath=d, save_on_exception=True)], {"enable_checkpointing": True},
         r"checkpoints on exception are refused, got save_on_exception=True.*save_last=True"),
        (lambda d: [], {"val_check_interval": "00:00:00:01"},
         r"val_check_interval must be 1.0.*got a time interval of 1.0s"),
    ],
)
def test_mid_round_checkpoints_and_validation_are_refused(tiny_data, tmp_path, callbacks, overrides, match):
    with pytest.raises(FederatedConfigError, match=match):
        fit(tiny_data, TinyClassifier(), callbacks(tmp_path), default_root_dir=tmp_path, **overrides)
