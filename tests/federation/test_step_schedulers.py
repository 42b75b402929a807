"""Step-interval learning-rate schedulers run on a per-client clock: round r, local step j -> schedule step r*S + j."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import quiet_trainer_kwargs
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.demos.boring_classes import BoringModel, RandomDataset

from lightning_fl import FederatedAveraging, FederatedDataModule, FederatedDDPStrategy
from lightning_fl.datamodules import QuantitySkewPartitioner
from lightning_fl.datamodules.plan import RoundPlan
from lightning_fl.exceptions import FederatedConfigError

ROUNDS = 4


class OneCycleBoring(BoringModel):
    """Lightning's demo module with the scheduler its docs recommend for estimated_stepping_batches."""

    def __init__(self, frequency: int = 1, total_steps: int | None = None, lazy: bool = False) -> None:
        super().__init__()
        if lazy:
            self.layer = torch.nn.Sequential(torch.nn.LazyLinear(4), torch.nn.Linear(4, 2))
        self.frequency = frequency
        self.total_steps = total_steps
        self.estimate: int | float | None = None

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        self.estimate = self.trainer.estimated_stepping_batches
        total = self.total_steps if self.total_steps is not None else int(self.estimate)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": self.frequency}}


class RecordLR(Callback):
    """The learning rate of every training batch, keyed by (round, client, local step)."""

    def __init__(self, fedavg: FederatedAveraging) -> None:
        self.fedavg = fedavg
        self.lrs: dict[tuple[int, int], list[float]] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        client = self.fedavg.round_cursor.client_of(batch_idx)
        if client >= 0:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            self.lrs.setdefault((trainer.current_epoch, client), []).append(lr)


def make_dm(cls: type[FederatedDataModule] = FederatedDataModule, **kwargs: Any) -> FederatedDataModule:
    torch.manual_seed(0)
    return cls(RandomDataset(32, 120), RandomDataset(32, 16),
                               partitioner=QuantitySkewPartitioner(num_clients=6, sigma=1.0, seed=1),
                               clients_per_round=3, batch_size=4, seed=1, **kwargs)


def fit(model: pl.LightningModule, dm: FederatedDataModule, **kwargs: Any) -> RecordLR:
    fedavg = FederatedAveraging()
    record = RecordLR(fedavg)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=ROUNDS, callbacks=[fedavg, record], **kwargs))
    trainer.fit(model, datamodule=dm)
    return record


def reference_lrs(total: int) -> list[float]:
    """OneCycleLR stepped on its own: the learning rate at every schedule step."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total)
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_one_cycle_over_estimated_stepping_batches_completes_with_unequal_clients():
    dm = make_dm()
    model = OneCycleBoring()
    record = fit(model, dm)
    steps = dm.max_client_steps
    sizes = dm.client_sizes
    assert int(sizes.max()) > 2 * int(sizes.min())  # clients differ in size: rounds differ in length
    # round 0 is the shortest: Lightning's estimate (round 0's batches x rounds) ran out in round 3 ("Tried to step")
    assert dm.plan_round(0).num_batches < min(dm.plan_round(r).num_batches for r in range(1, ROUNDS))
    assert model.estimate == ROUNDS * steps
    expected = reference_lrs(ROUNDS * steps)
    assert {r for r, _ in record.lrs} == set(range(ROUNDS))
    for (round_idx, client), lrs in record.lrs.items():
        # every client of a round starts at the round's learning rate and follows the same sequence
        assert lrs == pytest.approx(expected[round_idx * steps: round_idx * steps + len(lrs)], rel=1e-12), client


def test_clients_of_a_round_start_at_the_same_lr_and_the_schedule_advances_per_round():
    record = fit(OneCycleBoring(), make_dm())
    firsts: dict[int, set[float]] = {}
    for (round_idx, _), lrs in record.lrs.items():
        firsts.setdefault(round_idx, set()).add(lrs[0])
    assert all(len(values) == 1 for values in firsts.values()), firsts
    starts = [firsts[r].pop() for r in range(ROUNDS)]
    assert starts[1] > starts[0]  # warm-up over rounds, then annealing
    assert starts[3] < starts[2]


class ReversedClients(FederatedDataModule):
    """Runs every round's clients in the opposite order (a stand-in for another device count or placement)."""

    def plan_round(
        self, round_idx: int, world_size: int = 1, rank: int = 0, max_client_batches: int | None = None
    ) -> RoundPlan:
        plan = super().plan_round(round_idx, world_size, rank, max_client_batches)
        starts = [int(i) for i in np.flatnonzero(plan.first)] + [plan.num_batches]
        blocks = [list(range(a, b)) for a, b in itertools.pairwise(starts)][::-1]
        order = [i for block in blocks for i in block]
        return dataclasses.replace(
            plan, rank_clients=plan.rank_clients[::-1], batches=[plan.batches[i] for i in order],
            batch_client=plan.batch_client[order], first=plan.first[order], last=plan.last[order])


def test_lr_sequence_and_model_do_not_depend_on_client_order():
    torch.manual_seed(0)
    forward = OneCycleBoring()
    one = fit(forward, make_dm())
    torch.manual_seed(0)
    backward = OneCycleBoring()
    other = fit(backward, make_dm(cls=ReversedClients))
    assert list(one.lrs) != list(other.lrs)  # the clients really ran in another order
    assert one.lrs == other.lrs
    for a, b in zip(forward.parameters(), backward.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"frequency": 2}, "frequency must be 1 for the interval='step' scheduler OneCycleLR"),
    ({"total_steps": 5}, "OneCycleLR total_steps must be at least max_epochs \\* max_client_steps"),
])
def test_schedulers_that_cannot_follow_the_clock_are_refused(kwargs, match):
    with pytest.raises(FederatedConfigError, match=match):
        fit(OneCycleBoring(**kwargs), make_dm())


@pytest.mark.slow
@pytest.mark.distributed
def test_one_cycle_and_a_lazy_layer_give_the_same_model_on_one_and_two_devices():
    """Two processes run other clients in another order; the lazy layer is materialised on both and broadcast."""
    torch.manual_seed(0)
    one = OneCycleBoring(lazy=True)
    fit(one, make_dm())
    torch.manual_seed(0)
    two = OneCycleBoring(lazy=True)
    fit(two, make_dm(), devices=2, strategy=FederatedDDPStrategy(start_method="spawn"))
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


class StopAfterRound(Callback):
    def __init__(self, round_idx: int) -> None:
        self.round_idx = round_idx

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.round_idx:
            trainer.should_stop = True


def test_resume_continues_the_schedule_where_the_checkpoint_left_it(tmp_path):
    def run(name: str, extra: list[Callback], ckpt_path: str | None = None) -> tuple[OneCycleBoring, RecordLR]:
        torch.manual_seed(0)
        model = OneCycleBoring()
        fedavg = FederatedAveraging()
        record = RecordLR(fedavg)
        checkpoint = ModelCheckpoint(dirpath=tmp_path / name, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                                     auto_insert_metric_name=False)
        trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=ROUNDS, enable_checkpointing=True,
                                                    callbacks=[fedavg, record, checkpoint, *extra]))
        trainer.fit(model, datamodule=make_dm(), ckpt_path=ckpt_path)
        return model, record

    full, full_record = run("full", [])
    run("part", [StopAfterRound(1)])
    assert sorted(p.name for p in (tmp_path / "part").iterdir()) == ["round0.ckpt", "round1.ckpt"]
    resumed, resumed_record = run("resumed", [], ckpt_path=str(tmp_path / "part" / "round1.ckpt"))
    assert resumed_record.lrs == {k: v for k, v in full_record.lrs.items() if k[0] >= 2}
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
