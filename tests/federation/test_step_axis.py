"""TensorBoard axes: per-round scalars at step = round, per-batch scalars at step = round * stride + batch."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, quiet_trainer_kwargs
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_fedavg_reference import make_dm

from lightning_fl import FederatedAveraging, FederatedDataModule
from lightning_fl.federation.step_axis import max_round_batches, step_stride

ROUNDS = 3


class StepLrClassifier(TinyClassifier):
    """Logs ``train/loss`` per step (TinyClassifier's default) under a step-interval scheduler."""

    def configure_optimizers(self):  # type: ignore[override]
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.99)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _set_up_dm(tiny_data) -> FederatedDataModule:
    dm = make_dm(tiny_data)
    dm.setup("fit")
    return dm


def _fit(tiny_data, tmp_path, name: str, *callbacks: pl.Callback, ckpt_path: str | None = None,
         max_epochs: int = ROUNDS, **trainer_kwargs) -> tuple[FederatedAveraging, dict[str, list[int]]]:
    torch.manual_seed(0)
    fedavg = FederatedAveraging()
    logger = TensorBoardLogger(str(tmp_path), name=name, version=0)
    kwargs = quiet_trainer_kwargs(max_epochs=max_epochs, logger=logger, log_every_n_steps=1,
                                  callbacks=[*callbacks, fedavg], **trainer_kwargs)
    trainer = pl.Trainer(**kwargs)
    trainer.fit(StepLrClassifier(), datamodule=make_dm(tiny_data), ckpt_path=ckpt_path)
    acc = EventAccumulator(str(tmp_path / name / "version_0"))
    acc.Reload()
    return fedavg, {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_per_round_scalars_at_the_round_and_per_step_scalars_within_the_round(tiny_data, tmp_path):
    dm = _set_up_dm(tiny_data)
    stride = step_stride(max_round_batches(dm))
    batches = [dm.plan_round(r).num_batches for r in range(ROUNDS)]
    fedavg, steps = _fit(tiny_data, tmp_path, "run", LearningRateMonitor(logging_interval="step"))
    assert fedavg.step_axis.stride == stride
    for tag in ("val/acc", "val/loss", "fl/clients", "fl/uplink_bytes"):
        assert steps[tag] == list(range(ROUNDS)), tag
    # one value per batch: batch b of round r at r * stride + b
    expected = [r * stride + b for r in range(ROUNDS) for b in range(batches[r])]
    assert steps["lr-SGD"] == expected
    assert steps["train/loss"] == expected


def test_epoch_interval_learning_rate_is_logged_at_each_round_start(tiny_data, tmp_path):
    fedavg, steps = _fit(tiny_data, tmp_path, "epoch_lr", LearningRateMonitor(logging_interval="epoch"))
    stride = fedavg.step_axis.stride
    assert steps["lr-SGD"] == [r * stride for r in range(ROUNDS)]


def test_a_resumed_fit_logs_per_step_scalars_where_the_uninterrupted_one_does(tiny_data, tmp_path):
    _, full = _fit(tiny_data, tmp_path, "full")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1)
    _fit(tiny_data, tmp_path, "part", checkpoint, enable_checkpointing=True, max_epochs=2)
    _, resumed = _fit(tiny_data, tmp_path, "resumed", ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    stride = step_stride(max_round_batches(_set_up_dm(tiny_data)))
    assert resumed["train/loss"][0] == 2 * stride
    assert resumed["train/loss"] == [s for s in full["train/loss"] if s >= 2 * stride]
    assert resumed["val/acc"] == [2]
