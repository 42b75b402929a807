"""How the server combines a round's client updates.

An aggregator is configured in ``__init__`` (so it can be named in a config: ``aggregator=TrimmedMeanAggregator()``)
and allocated by :meth:`Aggregator.bind` once the model is known. The weighted federated mean is built like a
``torchmetrics.MeanMetric``: a weighted sum and a weight sum, reduced across processes in one all-reduce, divided
at the end. Robust aggregators (:mod:`lightning_fl.server.robust`) keep every update instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.distributed as dist

from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError


class Aggregator(ABC):
    """Accumulates a round's client updates and turns them into one update for the server optimizer.

    Every aggregator counts the updates and sums their weights and an unweighted float64 side vector (integer
    buffer increments, counters) in ``extra``; subclasses decide what they keep of the updates themselves
    (:meth:`_bind`, :meth:`_reset`, :meth:`_add`, :meth:`_sync`) and how they estimate the update (:meth:`compute`).
    """

    #: Whether :meth:`update` accepts a ``coverage`` (clients that hold only part of the model: Federated Dropout).
    supports_coverage: bool = False

    def __init__(self) -> None:
        self.extra = torch.zeros(2, dtype=torch.float64)  # [..extras, weight sum, count]
        self.numel = 0
        self.per_coordinate = False
        self.dtype = torch.float32

    def bind(
        self,
        numel: int,
        device: torch.device,
        extra_numel: int = 0,
        per_coordinate: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """Allocate the state for flat updates of ``numel`` elements on ``device`` (called at fit start).
        ``per_coordinate``: updates come with a coverage (which coordinates each client held). ``dtype``: that of
        the updates (the global state's: float64 for a ``64-true`` module)."""
        if per_coordinate and not self.supports_coverage:
            raise FederatedConfigError(
                f"{type(self).__name__} cannot combine updates of clients that hold different parts of the model "
                "(Federated Dropout); use WeightedMeanAggregator"
            )
        self.numel = int(numel)
        self.per_coordinate = per_coordinate
        self.dtype = dtype
        self.extra = torch.zeros(extra_numel + 2, dtype=torch.float64, device=device)
        self._bind(self.numel, device)

    def reset(self) -> None:
        """Zero the state for a new round."""
        self.extra.zero_()
        self._reset()

    @torch.no_grad()
    def update(
        self,
        delta: torch.Tensor,
        weight: float,
        extra: torch.Tensor | None = None,
        coverage: torch.Tensor | None = None,
    ) -> None:
        """Add one client's ``delta`` with ``weight`` (its sample count), and ``extra`` unweighted. ``coverage`` (1
        where the client held the coordinate, 0 elsewhere, where ``delta`` is 0) comes with every update when bound
        ``per_coordinate``."""
        if self.per_coordinate != (coverage is not None):
            raise FederatedRuntimeError(
                f"{type(self).__name__} was bound with per_coordinate={self.per_coordinate}, but an update came "
                f"{'without' if coverage is None else 'with'} a coverage"
            )
        self._add(delta, weight)
        if coverage is not None:
            self._add_coverage(coverage, weight)
        self.extra[-2] += weight
        self.extra[-1] += 1
        if extra is not None:
            self.extra[: extra.numel()] += extra.to(self.extra)

    @property
    def weight_sum(self) -> float:
        """Sum of the weights added (after :meth:`sync`: over all processes)."""
        return float(self.extra[-2])

    @property
    def count(self) -> int:
        """Number of updates added (after :meth:`sync`: over all processes)."""
        return int(self.extra[-1])

    @property
    def extras(self) -> torch.Tensor:
        """The unweighted side vector."""
        return self.extra[:-2]

    def sync(self) -> None:
        """Combine the state of all processes of the default group (a no-op in one process)."""
        if is_distributed():
            self._sync()
            dist.all_reduce(self.extra)

    @abstractmethod
    def compute(self, denominator: float | None = None) -> torch.Tensor:
        """The aggregated update. ``denominator`` replaces the sum of weights (aggregation over all clients): the
        estimate is scaled by ``weight_sum / denominator``.

        Returns:
            A new flat tensor; zeros when nothing was added.
        """

    @abstractmethod
    def _bind(self, numel: int, device: torch.device) -> None:
        """Allocate what the aggregator keeps of the updates."""

    @abstractmethod
    def _reset(self) -> None:
        """Forget the previous round's updates."""

    @abstractmethod
    def _add(self, delta: torch.Tensor, weight: float) -> None:
        """Keep one update."""

    def _add_coverage(self, coverage: torch.Tensor, weight: float) -> None:
        """Keep which coordinates a client held. Aggregators with ``supports_coverage`` override this; the others
        refuse ``per_coordinate`` in :meth:`bind`, so an update never brings them a coverage."""
        raise FederatedRuntimeError(f"{type(self).__name__} does not keep per-coordinate weights")

    @abstractmethod
    def _sync(self) -> None:
        """Combine the kept updates of all processes (only called when several processes run)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k not in _STATE)
        return f"{type(self).__name__}({args})"


_STATE = ("extra", "numel", "weighted_sum", "per_coordinate", "coordinate_weight", "dtype")


class WeightedMeanAggregator(Aggregator):
    """Accumulates ``sum_k w_k * delta_k`` and ``sum_k w_k`` over the clients of a round: FedAvg's mean.

    With ``per_coordinate`` binding (Federated Dropout) it also sums ``w_k`` per coordinate over the clients that
    held the coordinate, and divides each coordinate by that sum; coordinates no client held get a zero update.

    State is preallocated once and updated in place; :meth:`reset` starts a round, :meth:`update` adds a
    client, :meth:`sync` sums the state over all processes (one all-reduce of the model-size vector and one of
    the small float64 extras), :meth:`compute` divides.

    Args:
        numel: Length of a flat update; ``None`` defers allocation to :meth:`bind` (as
            :class:`~lightning_fl.FederatedAveraging` does).
        device: Where the state lives (default CPU).
        extra_numel: Length of an optional float64 side vector summed alongside (integer-buffer increments,
            counters), unweighted.

    Example:
        >>> agg = WeightedMeanAggregator(2, torch.device("cpu"))
        >>> agg.update(torch.tensor([1.0, 2.0]), weight=1.0)
        >>> agg.update(torch.tensor([3.0, 6.0]), weight=3.0)
        >>> agg.compute().tolist()
        [2.5, 5.0]
        >>> agg.compute(denominator=8.0).tolist()
        [1.25, 2.5]
    """

    supports_coverage = True

    def __init__(
        self, numel: int | None = None, device: torch.device | None = None, extra_numel: int = 0
    ) -> None:
        super().__init__()
        self.weighted_sum = torch.zeros(0, dtype=torch.float32)
        self.coordinate_weight: torch.Tensor | None = None
        if numel is not None:
            self.bind(numel, device if device is not None else torch.device("cpu"), extra_numel)

    def _bind(self, numel: int, device: torch.device) -> None:
        self.weighted_sum = torch.zeros(numel, dtype=self.dtype, device=device)
        self.coordinate_weight = torch.zeros_like(self.weighted_sum) if self.per_coordinate else None

    def _reset(self) -> None:
        self.weighted_sum.zero_()
        if self.coordinate_weight is not None:
            self.coordinate_weight.zero_()

    def _add(self, delta: torch.Tensor, weight: float) -> None:
        self.weighted_sum.add_(delta, alpha=weight)

    def _add_coverage(self, coverage: torch.Tensor, weight: float) -> None:
        assert self.coordinate_weight is not None
        self.coordinate_weight.add_(coverage, alpha=weight)

    def _sync(self) -> None:
        dist.all_reduce(self.weighted_sum)
        if self.coordinate_weight is not None:
            dist.all_reduce(self.coordinate_weight)

    def compute(self, denominator: float | None = None) -> torch.Tensor:
        """The weighted mean; per coordinate when bound ``per_coordinate``. ``denominator`` (aggregation over all
        clients) scales the mean by ``weight_sum / denominator``, per coordinate as well."""
        if self.weight_sum <= 0 or (denominator is not None and denominator <= 0):
            return torch.zeros_like(self.weighted_sum)
        if self.coordinate_weight is None:
            return self.weighted_sum / (self.weight_sum if denominator is None else denominator)
        held = self.coordinate_weight > 0
        mean = torch.where(held, self.weighted_sum / self.coordinate_weight.clamp_min(1e-30), 0.0)
        if denominator is not None:
            mean.mul_(self.weight_sum / denominator)
        return mean


def is_distributed() -> bool:
    """Whether several processes of a default process group run."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
