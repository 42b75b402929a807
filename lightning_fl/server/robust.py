"""Byzantine-robust aggregation: coordinate-wise median, trimmed mean (Yin et al. 2018) and update-norm clipping.

The median and the trimmed mean need every update of the round, so they keep a copy of each one (on the device,
``clients_per_round * numel * 4`` bytes per round) and, with several processes, gather them from all ranks
(after the round's one all-reduce of sums, an all-gather padded to the rank with the most clients). Both ignore
the clients' sample counts: a coordinate-wise order statistic has no natural weighting, and weights are what an
attacker would inflate. Norm clipping streams like the weighted mean and costs no extra memory.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.distributed as dist

from lightning_fl.checks import check_float, check_positive
from lightning_fl.server.aggregator import Aggregator, WeightedMeanAggregator
from lightning_fl.server.reduce import is_distributed


def coordinate_median(updates: torch.Tensor) -> torch.Tensor:
    """Median of every coordinate over the rows of ``updates`` (the mean of the two middle values for an even
    number of rows, as ``numpy.median``).

    Example:
        >>> coordinate_median(torch.tensor([[1.0, 10.0], [2.0, -5.0], [9.0, 0.0], [3.0, 1.0]])).tolist()
        [2.5, 0.5]
    """
    n = updates.shape[0]
    ordered = updates.sort(dim=0).values
    if n % 2:
        return ordered[n // 2].clone()
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def trimmed_mean(updates: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean of every coordinate after dropping its ``floor(beta * n)`` smallest and largest values over the ``n``
    rows (``scipy.stats.trim_mean(updates, beta, axis=0)``).

    Example:
        >>> trimmed_mean(torch.tensor([[1.0], [2.0], [3.0], [100.0]]), beta=0.25).tolist()
        [2.5]
    """
    n = updates.shape[0]
    k = int(beta * n)
    ordered = updates.sort(dim=0).values
    return ordered[k : n - k].mean(dim=0)


class _GatheringAggregator(Aggregator):
    """Keeps every update of the round in a reusable buffer; :meth:`gather` gathers all ranks' updates."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = torch.zeros(0, 0)
        self._rows = 0
        self._gathered: torch.Tensor | None = None

    def declare(self, numel: int) -> None:
        """No sum-state of its own (the count and weight sum are the base's): a row buffer, grown on demand."""
        self._buffer = torch.zeros(0, numel, dtype=self.dtype, device=self.extra.device)
        self._rows = 0
        self._gathered = None

    def clear(self) -> None:
        """Forget the previous round's rows (the buffer is kept)."""
        self._rows = 0
        self._gathered = None

    def accumulate(self, delta: torch.Tensor, weight: float, coverage: torch.Tensor | None) -> None:
        """Keep ``delta`` as a row (the weight is ignored: order statistics are unweighted)."""
        if self._rows == self._buffer.shape[0]:
            grown = torch.zeros(max(4, 2 * self._rows), self.numel, dtype=self.dtype, device=self._buffer.device)
            grown[: self._rows] = self._buffer[: self._rows]
            self._buffer = grown
        self._buffer[self._rows].copy_(delta)
        self._rows += 1

    def gather(self) -> None:
        """All-gather every process's rows (padded to the process with the most), when several processes run."""
        if not is_distributed():
            return
        world = dist.get_world_size()
        device = self._buffer.device
        counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
        dist.all_gather(counts, torch.tensor([self._rows], dtype=torch.int64, device=device))
        sizes = [int(c.item()) for c in counts]
        longest = max(sizes)
        padded = torch.zeros(longest, self.numel, dtype=self.dtype, device=device)
        padded[: self._rows] = self._buffer[: self._rows]
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        self._gathered = torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    @property
    def updates(self) -> torch.Tensor:
        """The round's updates as rows (after :meth:`sync`: of every process)."""
        return self._gathered if self._gathered is not None else self._buffer[: self._rows]

    def compute(self, denominator: float | None = None) -> torch.Tensor:
        updates = self.updates
        if updates.shape[0] == 0:
            return torch.zeros(self.numel, dtype=self.dtype, device=self._buffer.device)
        estimate = self._estimate(updates)
        if denominator is not None:
            estimate.mul_(self.weight_sum / denominator if denominator > 0 else 0.0)
        return estimate

    @abstractmethod
    def _estimate(self, updates: torch.Tensor) -> torch.Tensor:
        """The robust estimate from the stacked updates (abstract: median or trimmed mean)."""


class CoordinateMedianAggregator(_GatheringAggregator):
    """Coordinate-wise median of the round's updates (Yin et al. 2018), unweighted.

    Example:
        >>> agg = CoordinateMedianAggregator(); agg.bind(2, torch.device("cpu"))
        >>> for row in ([1.0, 0.0], [2.0, 0.0], [100.0, -50.0]):
        ...     agg.update(torch.tensor(row), weight=1.0)
        >>> agg.compute().tolist()
        [2.0, 0.0]
    """

    def _estimate(self, updates: torch.Tensor) -> torch.Tensor:
        return coordinate_median(updates)


class TrimmedMeanAggregator(_GatheringAggregator):
    """Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the ``floor(beta * n)`` largest and
    smallest of the ``n`` updates and average the rest, unweighted.

    Args:
        beta: Fraction trimmed at each end, in [0, 0.5); it should exceed the fraction of malicious clients.

    Raises:
        FederatedConfigError: If ``beta`` is outside [0, 0.5).

    Example:
        >>> agg = TrimmedMeanAggregator(beta=0.25); agg.bind(1, torch.device("cpu"))
        >>> for value in (1.0, 2.0, 3.0, 100.0):
        ...     agg.update(torch.tensor([value]), weight=1.0)
        >>> agg.compute().tolist()
        [2.5]
    """

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        self.beta = check_float("beta", beta, 0, 0.5, high_open=True)

    def _estimate(self, updates: torch.Tensor) -> torch.Tensor:
        return trimmed_mean(updates, self.beta)


class NormClippingAggregator(WeightedMeanAggregator):
    """The weighted mean of updates each clipped to L2 norm at most ``max_norm`` (over the whole flat update):
    ``delta * min(1, max_norm / ||delta||)``. Bounds what any one client can move the model.

    Args:
        max_norm: Largest L2 norm an update keeps, > 0.

    Raises:
        FederatedConfigError: If ``max_norm`` is not positive.

    Example:
        >>> agg = NormClippingAggregator(max_norm=1.0); agg.bind(2, torch.device("cpu"))
        >>> agg.update(torch.tensor([3.0, 4.0]), weight=1.0)
        >>> agg.compute().tolist()
        [0.6000000238418579, 0.800000011920929]
    """

    def __init__(self, max_norm: float = 1.0) -> None:
        super().__init__()
        self.max_norm = check_positive("max_norm", max_norm)

    def accumulate(self, delta: torch.Tensor, weight: float, coverage: torch.Tensor | None) -> None:
        """Add ``delta`` clipped to ``max_norm``; its coverage keeps the client's full weight."""
        norm = float(torch.linalg.vector_norm(delta))
        factor = min(1.0, self.max_norm / norm) if norm > 0 else 1.0
        super().accumulate(delta, weight * factor, None)
        if coverage is not None:
            assert self.coordinate_weight is not None
            self.coordinate_weight.add_(coverage, alpha=weight)
