"""Vectorized cohorts in a real fit: what self.log reports, dropout seeds, bf16, checkpoints and two processes."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import TinyClassifier, quiet_trainer_kwargs
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from vectorized_helpers import assert_same_state, fit, make_dm

from lightning_fl import FederatedAveraging, FederatedDDPStrategy
from lightning_fl.datamodules.loaders import round_plan_of
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.cohort_context import CohortContext
from lightning_fl.server import ServerAdam


class FirstStepLosses(pl.Callback):
    """The logged ``train/loss`` at every client's first local step of round 0 (sequential), or at the first step of
    round 0 (vectorized: one chunk of all the round's clients)."""

    def __init__(self, vectorized: bool) -> None:
        self.vectorized = vectorized
        self.values: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        first = batch_idx == 0 if self.vectorized else bool(round_plan_of(trainer).first[batch_idx])
        if trainer.current_epoch == 0 and first:
            self.values.append(float(trainer.callback_metrics["train/loss"]))
            self.values.append(float(trainer.callback_metrics["train/constant"]))


class LogsMore(TinyClassifier):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.log_dict({"train/constant": 2.0})
        return super().training_step(batch, batch_idx)


def test_logged_value_is_the_mean_over_clients_of_the_sequential_values():
    seq, vec = FirstStepLosses(False), FirstStepLosses(True)
    fit(False, LogsMore, rounds=1, callbacks=[seq])
    fit(True, LogsMore, rounds=1, callbacks=[vec])
    per_client = seq.values[0::2]
    assert len(per_client) == 4 and len(set(per_client)) == 4  # 4 clients in round 0, each its own loss
    assert len(vec.values) == 2
    assert vec.values[0] == pytest.approx(sum(per_client) / len(per_client), abs=1e-6)
    assert vec.values[1] == 2.0


class Dropout(TinyClassifier):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 3))


def test_dropout_is_reproducible_and_differs_between_clients():
    first, _ = fit(True, Dropout, rounds=2)
    again, _ = fit(True, Dropout, rounds=2)
    assert_same_state(first, again, atol=0)
    masks = torch.func.vmap(lambda x: F.dropout(x, 0.5, training=True), randomness="different")(torch.ones(2, 16))
    assert not torch.equal(masks[0], masks[1])  # what randomness="different" gives each client


def test_bf16_mixed_trains_close_to_sequential():
    dm_fn = partial(make_dm, double=False)
    sequential, _ = fit(False, dm_fn=dm_fn, precision="bf16-mixed")
    vectorized, fedavg = fit(True, dm_fn=dm_fn, precision="bf16-mixed")
    assert fedavg.vectorized
    assert_same_state(sequential, vectorized, atol=2e-2)


class Proximal(FederatedAlgorithm):
    """A proximal term mu * (w - w_start) on every client's gradient, in both modes."""

    def __init__(self) -> None:
        super().__init__()
        self.active: list[list[bool]] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: Any, optimizer: Any) -> None:
        client = self.context.round.client
        if client is not None:  # sequential (vectorized: between clients, on_before_cohort_step acts)
            for param, start in zip(client.params, client.start_weights, strict=True):
                param.grad.add_(param.detach() - start, alpha=0.5)

    def on_before_cohort_step(self, cohort: CohortContext) -> None:
        self.active.append(cohort.active.tolist())
        for param, start in zip(cohort.params, cohort.start_weights, strict=True):
            assert param.grad is not None and param.shape[0] == len(cohort.clients)
            param.grad.add_(param.detach() - start, alpha=0.5)


def test_algorithms_act_on_the_chunks_gradients_before_each_step():
    sequential, _ = fit(False, callbacks=[Proximal()], fedavg_kwargs={"max_parallel_clients": 3})
    algorithm = Proximal()
    vectorized, _ = fit(True, callbacks=[algorithm], fedavg_kwargs={"max_parallel_clients": 3})
    assert_same_state(sequential, vectorized)
    assert [True, True, True] in algorithm.active and [True] in algorithm.active  # chunks of 3 and of 1
    assert any(not all(a) for a in algorithm.active)  # a shorter client idles in its chunk's last steps


def run(tmp_path, rounds, ckpt_path=None):
    torch.manual_seed(0)
    model = TinyClassifier(batchnorm=True)
    dm = make_dm(n=120, clients=6, per_round=3, batch_size=5, drop_last=True, double=False)
    fedavg = FederatedAveraging(server_optimizer=ServerAdam(lr=0.05), vectorize=True, max_parallel_clients=2)
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                           auto_insert_metric_name=False)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[fedavg, ckpt], enable_checkpointing=True))
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, trainer


def test_resume_from_a_round_end_checkpoint_is_bit_identical(tmp_path):
    full, _ = run(tmp_path / "full", 4)
    _, part = run(tmp_path / "part", 2)
    checkpoint = torch.load(tmp_path / "part" / "round1.ckpt", weights_only=False)
    group = checkpoint["optimizer_states"][0]["param_groups"][0]
    assert len(group["params"]) == 6  # the module's own parameters, not the stacked ones
    assert isinstance(part.optimizers[0].param_groups[0]["params"][0], nn.Parameter)
    resumed, _ = run(tmp_path / "resumed", 4, ckpt_path=str(tmp_path / "part" / "round1.ckpt"))
    assert_same_state(full, resumed, atol=0)


@pytest.mark.distributed
def test_two_processes_equal_one_process_sequential():
    dm_fn = partial(make_dm, n=160, clients=8, per_round=5, drop_last=True, double=False)
    model_fn = partial(TinyClassifier, batchnorm=True)
    one, _ = fit(False, model_fn, dm_fn, precision="32-true")
    two, _ = fit(True, model_fn, dm_fn, fedavg_kwargs={"max_parallel_clients": 2}, devices=2,
                 strategy=FederatedDDPStrategy(start_method="spawn"), precision="32-true")
    assert_same_state(one, two)
