"""A fit stopped in the middle of a round (should_stop, max_time, KeyboardInterrupt) abandons the round: the module
holds the round's starting global model when validation runs and when fit returns, and no checkpoint is written."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, quiet_trainer_kwargs
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.callbacks import timer as timer_module

from lightning_fl import (
    FederatedAveraging,
    FederatedDataModule,
    FederatedDDPStrategy,
    FederatedDropout,
    FederatedRuntimeError,
)
from lightning_fl.datamodules import IIDPartitioner

STOP_ROUND, STOP_BATCH = 1, 2  # 4 clients of 30 samples, 2 per round, batches of 16: 4 batches per round


class Recorder(Callback):
    """The module's parameters after every round and ``val/loss`` after every validation."""

    def __init__(self) -> None:
        self.globals: list[list[torch.Tensor]] = []
        self.val_loss: list[float] = []

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.globals.append([p.detach().clone() for p in pl_module.parameters()])

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.val_loss.append(float(trainer.callback_metrics["val/loss"]))


class StopMidRound(Callback):
    def __init__(self, batch_idx: int = STOP_BATCH) -> None:
        self.batch_idx = batch_idx

    def on_train_batch_end(self, trainer: "pl.Trainer", *args: Any) -> None:
        if trainer.current_epoch == STOP_ROUND and args[-1] == self.batch_idx:
            trainer.should_stop = True


class StepClock:
    """A clock for Lightning's Timer that advances one second per training step: max_time runs out at a known batch."""

    now = 0.0

    @classmethod
    def monotonic(cls) -> float:
        return cls.now


class StoppingModule(TinyClassifier):
    """Sets ``trainer.should_stop`` (or raises ``KeyboardInterrupt``, or ticks the Timer's clock) in its own step."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        StepClock.now += 1.0
        if self.current_epoch == STOP_ROUND and batch_idx == STOP_BATCH:
            if self.how == "interrupt":
                raise KeyboardInterrupt
            if self.how == "module":
                self.trainer.should_stop = True
        return super().training_step(batch, batch_idx)


def build(tiny_data, tmp_path, how: str = "none", extra: tuple[Callback, ...] = (), **overrides: Any):
    torch.manual_seed(0)
    model = StoppingModule(how)
    dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=4), clients_per_round=2,
                             batch_size=16)
    server, recorder = FederatedAveraging(), Recorder()
    callbacks = [server, recorder, ModelCheckpoint(dirpath=tmp_path, save_last=True), *extra]
    if how == "callback":
        callbacks.append(StopMidRound())
    kwargs = quiet_trainer_kwargs(max_epochs=3, callbacks=callbacks, enable_checkpointing=True)
    trainer = pl.Trainer(**{**kwargs, **overrides})
    return trainer, model, dm, server, recorder


def run(tiny_data, tmp_path, how: str = "none", extra: tuple[Callback, ...] = (), **overrides: Any):
    trainer, model, dm, server, recorder = build(tiny_data, tmp_path, how, extra, **overrides)
    trainer.fit(model, datamodule=dm)
    return trainer, model, server, recorder


def same(a: list[torch.Tensor], b: Any) -> bool:
    return all(bool(torch.equal(x, y.detach())) for x, y in zip(a, b, strict=True))


@pytest.fixture
def reference(tiny_data, tmp_path_factory):
    """The uninterrupted run's global models and validation losses."""
    _, _, _, recorder = run(tiny_data, tmp_path_factory.mktemp("reference"))
    return recorder


@pytest.mark.parametrize("how", ["callback", "module"])
def test_should_stop_mid_round_abandons_the_round(tiny_data, tmp_path, reference, how):
    trainer, model, server, recorder = run(tiny_data, tmp_path, how)
    assert server.rounds_completed == STOP_ROUND and server.abandoned_round is not None
    assert server.abandoned_round.round_idx == STOP_ROUND
    assert same(reference.globals[STOP_ROUND - 1], model.parameters())  # fit returned the last global model
    # the stop's validation evaluated that global model: the very loss of its own round's validation
    assert recorder.val_loss == [*reference.val_loss[:STOP_ROUND], reference.val_loss[STOP_ROUND - 1]]
    # only round 0's checkpoint, and last.ckpt is round 0's end (no misleading error, nothing mid-round)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=0-step=4.ckpt", "last.ckpt"]
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert last["epoch"] == STOP_ROUND - 1
    assert same(reference.globals[STOP_ROUND - 1], [last["state_dict"][n] for n, _ in model.named_parameters()])
    with pytest.raises(FederatedRuntimeError, match=r"round 1 was stopped before its end \(trainer.should_stop\) "
                                                   r"and abandoned.*weights_only=True"):
        trainer.save_checkpoint(tmp_path / "after.ckpt")
    trainer.save_checkpoint(tmp_path / "weights.ckpt", weights_only=True)
    assert trainer.checkpoint_callback.save_last is True  # muted for the rest of the fit only


def test_max_time_abandons_the_round_it_runs_out_in(tiny_data, tmp_path, reference, monkeypatch):
    monkeypatch.setattr(timer_module, "time", StepClock)
    # one second per step: the time runs out after the 7th step, round 1's batch 2
    trainer, model, server, recorder = run(tiny_data, tmp_path, max_time={"seconds": 4 * STOP_ROUND + STOP_BATCH + 1})
    assert trainer.global_step == 4 * STOP_ROUND + STOP_BATCH + 1
    assert server.rounds_completed == STOP_ROUND and server.abandoned_round is not None
    assert server.abandoned_round.round_idx == STOP_ROUND
    assert same(reference.globals[STOP_ROUND - 1], model.parameters())
    assert recorder.val_loss == [*reference.val_loss[:STOP_ROUND], reference.val_loss[STOP_ROUND - 1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=0-step=4.ckpt", "last.ckpt"]


def test_keyboard_interrupt_mid_round_restores_the_global_model(tiny_data, tmp_path, reference):
    trainer, model, dm, server, recorder = build(tiny_data, tmp_path, "interrupt")
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown
            trainer.fit(model, datamodule=dm)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl+C after the first
    assert server.abandoned_round is not None and server.abandoned_round.reason == "KeyboardInterrupt"
    assert server.rounds_completed == STOP_ROUND
    assert same(reference.globals[STOP_ROUND - 1], model.parameters())
    assert recorder.val_loss == reference.val_loss[:STOP_ROUND]  # no validation of the interrupted round
    assert trainer.checkpoint_callback.save_last is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=0-step=4.ckpt", "last.ckpt"]


def test_a_stopped_round_of_submodels_gives_back_the_full_global_model(tiny_data, tmp_path):
    _, _, _, reference = run(tiny_data, tmp_path / "reference", extra=(FederatedDropout(keep=0.5),))
    _, model, server, _ = run(tiny_data, tmp_path / "stopped", "callback", extra=(FederatedDropout(keep=0.5),))
    assert server.abandoned_round is not None
    assert [tuple(p.shape) for p in model.parameters()] == [(16, 6), (16,), (3, 16), (3,)]  # not a client's submodel
    assert same(reference.globals[STOP_ROUND - 1], model.parameters())


@pytest.mark.distributed
def test_two_processes_abandon_the_round_like_one(tiny_data, tmp_path, reference):
    # two clients per round on two ranks: one client, 2 batches, per rank; every rank stops after its batch 0
    strategy = FederatedDDPStrategy(start_method="spawn")
    _, model, _, _ = run(tiny_data, tmp_path, extra=(StopMidRound(batch_idx=0),), devices=2, strategy=strategy)
    for a, b in zip(reference.globals[STOP_ROUND - 1], model.parameters(), strict=True):
        torch.testing.assert_close(b.detach(), a, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert last["epoch"] == STOP_ROUND - 1 and last["callbacks"]["FederatedAveraging"]["rounds_completed"] == 1
