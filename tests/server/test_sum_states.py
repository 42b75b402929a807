"""Aggregators declare their sum-states (torchmetrics style); a custom one overrides public methods only."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_fl import FederatedConfigError, FederatedRuntimeError
from lightning_fl.server import WeightedMeanAggregator
from lightning_fl.server.aggregator import Aggregator
from lightning_fl.server.reduce import all_reduce_sums


class SumAndSquares(Aggregator):
    """A third-party aggregator: overrides declare, accumulate and compute, nothing private."""

    def declare(self, numel: int) -> None:
        self.add_state("total", numel)
        self.add_state("squares", numel, dtype=torch.float64)
        self.add_state("seen", 1, dtype=torch.int64)

    def accumulate(self, delta: torch.Tensor, weight: float, coverage: torch.Tensor | None) -> None:
        self.total.add_(delta, alpha=weight)
        self.squares.add_(delta.double() ** 2)
        self.seen += 1

    def compute(self, denominator: float | None = None) -> torch.Tensor:
        return self.total / (denominator or self.weight_sum)


def fed(agg: Aggregator) -> Aggregator:
    agg.bind(3, torch.device("cpu"), extra_numel=2)
    agg.update(torch.tensor([1.0, 2.0, 3.0]), 1.0, extra=torch.tensor([5.0, 7.0]))
    agg.update(torch.tensor([3.0, 2.0, 1.0]), 3.0)
    return agg


def test_declared_states_are_allocated_summed_in_order_and_reset():
    agg = fed(SumAndSquares())
    states = agg.sum_states()
    assert [s.dtype for s in states] == [torch.float64, torch.float32, torch.float64, torch.int64]
    assert states[0] is agg.extra and states[1] is agg.total and states[2] is agg.squares and states[3] is agg.seen
    assert agg.total.tolist() == [10.0, 8.0, 6.0] and agg.squares.tolist() == [10.0, 8.0, 10.0]
    assert agg.seen.tolist() == [2] and agg.count == 2 and agg.weight_sum == 4.0
    assert agg.extras.tolist() == [5.0, 7.0]
    assert agg.compute().tolist() == [2.5, 2.0, 1.5]
    agg.sync()  # one process: nothing changes
    assert agg.total.tolist() == [10.0, 8.0, 6.0]
    agg.reset()
    assert all(not bool(s.any()) for s in agg.sum_states())
    assert agg.count == 0 and agg.weight_sum == 0.0


def test_rebinding_declares_afresh_and_the_weighted_mean_declares_coverage_only_when_needed():
    agg = fed(SumAndSquares())
    agg.bind(5, torch.device("cpu"))
    assert [s.numel() for s in agg.sum_states()] == [2, 5, 5, 1]
    mean = WeightedMeanAggregator()
    mean.bind(4, torch.device("cpu"))
    assert [s.numel() for s in mean.sum_states()] == [2, 4] and mean.coordinate_weight is None
    mean.bind(4, torch.device("cpu"), per_coordinate=True, dtype=torch.float64)
    assert mean.sum_states()[2] is mean.coordinate_weight and mean.weighted_sum.dtype == torch.float64


def test_add_state_is_refused_outside_declare_and_with_a_taken_name():
    agg = fed(SumAndSquares())
    with pytest.raises(FederatedRuntimeError, match=r"add_state\('late'\) must be called from declare\(\)"):
        agg.add_state("late", 3)

    class Clash(SumAndSquares):
        def declare(self, numel: int) -> None:
            self.add_state("count", numel)

    with pytest.raises(FederatedConfigError, match=r"add_state name must be a new public identifier.*got 'count'"):
        Clash().bind(3, torch.device("cpu"))

    class Twice(SumAndSquares):
        def declare(self, numel: int) -> None:
            self.add_state("total", numel)
            self.add_state("total", numel)

    with pytest.raises(FederatedConfigError, match="got 'total'"):
        Twice().bind(3, torch.device("cpu"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _two_ranks(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    calls = []
    original = dist.all_reduce

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(*args, **kwargs)

    dist.all_reduce = counted  # type: ignore[assignment]
    try:
        agg = SumAndSquares()
        agg.bind(3, torch.device("cpu"), extra_numel=1)
        gen = torch.Generator().manual_seed(rank)
        agg.update(torch.randn(3, generator=gen), 1.0 + rank, extra=torch.tensor([2.0**25 + rank], dtype=torch.float64))
        agg.sync()
        torch.save({"calls": len(calls), "states": [s.clone() for s in agg.sum_states()]}, f"{out}/rank{rank}.pt")
    finally:
        dist.all_reduce = original  # type: ignore[assignment]
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_sum_every_state_in_one_all_reduce_exactly(tmp_path):
    mp.spawn(_two_ranks, args=(_free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["calls"] for r in ranks] == [1, 1]
    deltas = [torch.randn(3, generator=torch.Generator().manual_seed(r)) for r in range(2)]
    total = deltas[0] * 1.0 + deltas[1] * 2.0  # float32 sum of the two ranks, exactly as one process would add
    for r in ranks:
        extra, summed, squares, seen = r["states"]
        assert extra.tolist() == [2.0**26 + 1, 3.0, 2.0]  # byte counters above 2**24 stay exact
        assert torch.equal(summed, total) and summed.dtype == torch.float32
        assert torch.allclose(squares, sum(d.double() ** 2 for d in deltas)) and seen.tolist() == [2]


def test_all_reduce_sums_is_a_no_op_in_one_process():
    t = torch.arange(3.0)
    assert all_reduce_sums([t]) is None and t.tolist() == [0.0, 1.0, 2.0]
