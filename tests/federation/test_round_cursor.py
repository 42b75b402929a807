"""The round cursor: dispatch by batch index on a hand-built plan with padding, client tracking, the host's cursor."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, quiet_trainer_kwargs

from lightning_fl import FederatedAveraging, FederatedDataModule
from lightning_fl.datamodules import DirichletPartitioner
from lightning_fl.datamodules.plan import RoundPlan
from lightning_fl.exceptions import FederatedRuntimeError
from lightning_fl.federation.context import ClientContext
from lightning_fl.federation.cursor import RoundCursor, RoundView


def padded_plan() -> RoundPlan:
    """Rank 0 of round 5 on two ranks: client 4 runs 3 batches, client 1 one batch, then 2 padding batches."""
    return RoundPlan(
        round_idx=5,
        clients=np.array([1, 2, 4]),
        rank_clients=[4, 1],
        batches=[np.arange(2)] * 6,
        batch_client=np.array([4, 4, 4, 1, -1, -1]),
        first=np.array([True, False, False, True, False, False]),
        last=np.array([False, False, True, True, False, False]),
    )


def test_dispatch_flags_on_a_plan_with_padding():
    cursor = RoundCursor()
    cursor.open(padded_plan())
    assert cursor.in_round and cursor.plan.round_idx == 5
    assert [cursor.client_of(b) for b in range(6)] == [4, 4, 4, 1, -1, -1]
    assert [cursor.is_first(b) for b in range(6)] == [True, False, False, True, False, False]
    assert [cursor.is_last(b) for b in range(6)] == [False, False, True, True, False, False]
    assert [cursor.closes_round(b) for b in range(6)] == [False] * 5 + [True]
    assert all(isinstance(cursor.client_of(b), int) for b in range(6))


def test_client_tracking_and_the_mid_round_refusal():
    cursor = RoundCursor()
    assert cursor.client is None and cursor.current_client is None
    cursor.open(padded_plan())
    assert isinstance(cursor, RoundView)
    context = ClientContext(round_idx=5, client_id=4, num_samples=6, num_batches=3, params=[], start_weights=[])
    cursor.enter_client(4, context)
    assert cursor.client is context and cursor.current_client == 4
    with pytest.raises(FederatedRuntimeError, match="middle of round 5: the module holds a client's weights"):
        cursor.refuse_mid_round_checkpoint(SimpleNamespace(current_epoch=5), "the module holds a client's weights")
    cursor.leave_client()
    assert cursor.client is None and cursor.current_client is None
    cursor.enter_client(1, None)  # no algorithm in the Trainer: no context is built, the id is still known
    assert cursor.client is None and cursor.current_client == 1
    cursor.end_round()
    assert not cursor.in_round and cursor.current_client is None
    cursor.refuse_mid_round_checkpoint(SimpleNamespace(current_epoch=5), "anything")  # closed: no refusal


class Probe(pl.Callback):
    """Runs after the server callback: the host's cursor names the client of every batch, as the plan does."""

    def __init__(self, fedavg: FederatedAveraging) -> None:
        self.fedavg = fedavg
        self.agree: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        cursor = self.fedavg.round_cursor
        expected = int(trainer.datamodule.current_plan.batch_client[batch_idx])
        self.agree.append(cursor.current_client == expected == cursor.client_of(batch_idx))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.agree.append(self.fedavg.round_cursor.current_client is None)


def test_the_host_cursor_follows_the_plan():
    from conftest import make_tiny_data

    fedavg = FederatedAveraging()
    probe = Probe(fedavg)
    dm = FederatedDataModule(make_tiny_data(60), make_tiny_data(30, seed=1),
                             partitioner=DirichletPartitioner(num_clients=4, alpha=1.0, seed=0), clients_per_round=2,
                             batch_size=8)
    torch.manual_seed(0)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=2, callbacks=[fedavg, probe]))
    trainer.fit(TinyClassifier(), datamodule=dm)
    assert len(probe.agree) > 6 and all(probe.agree)
