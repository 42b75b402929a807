"""How the server combines a round's client updates.

An aggregator is configured in ``__init__`` (so it can be named in a config: ``aggregator=TrimmedMeanAggregator()``)
and allocated by :meth:`Aggregator.bind` once the model is known. Like a ``torchmetrics.Metric``, it declares its
sum-states with :meth:`Aggregator.add_state` (``dist_reduce_fx="sum"``); the runtime sums every declared state of a
round, together with its own counters, in one all-reduce (:func:`~lightning_fl.server.reduce.all_reduce_sums`).
The weighted federated mean is a weighted sum and a weight sum, divided at the end. Robust aggregators
(:mod:`lightning_fl.server.robust`) keep every update instead and gather them in :meth:`Aggregator.gather`.

A custom aggregator overrides public methods only: :meth:`~Aggregator.declare` (its states),
:meth:`~Aggregator.accumulate` (one update), :meth:`~Aggregator.compute` (the estimate), and optionally
:meth:`~Aggregator.clear` (per-round state that is not a sum) and :meth:`~Aggregator.gather` (after the sums).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError
from lightning_fl.server.reduce import SumBuffer, all_reduce_sums, is_distributed

__all__ = ["Aggregator", "WeightedMeanAggregator", "is_distributed"]


class Aggregator(ABC):
    """Accumulates a round's client updates and turns them into one update for the server optimizer.

    Every aggregator counts the updates and sums their weights, plus an optional unweighted float64 side vector
    for its caller (``extra_numel`` at :meth:`bind`, ``extra=`` at :meth:`update`, read back as :attr:`extras`), in
    its ``extra`` state; the federated runtime binds no side vector and sums its own integer-buffer increments and
    counters itself. Subclasses declare what they keep of the updates (:meth:`declare`), add one update
    (:meth:`accumulate`) and estimate the round's update (:meth:`compute`).

    Example:
        >>> class Sum(Aggregator):
        ...     def declare(self, numel):
        ...         self.add_state("total", numel)
        ...     def accumulate(self, delta, weight, coverage):
        ...         self.total.add_(delta)
        ...     def compute(self, denominator=None):
        ...         return self.total.clone()
        >>> agg = Sum(); agg.bind(2, torch.device("cpu"))
        >>> agg.update(torch.tensor([1.0, 2.0]), weight=5.0); agg.update(torch.tensor([3.0, 4.0]), weight=1.0)
        >>> agg.compute().tolist(), agg.count, agg.weight_sum, [s.numel() for s in agg.sum_states()]
        ([4.0, 6.0], 2, 6.0, [2, 2])
    """

    #: Whether :meth:`update` accepts a ``coverage`` (clients that hold only part of the model: Federated Dropout).
    supports_coverage: ClassVar[bool] = False

    def __init__(self) -> None:
        self.extra = torch.zeros(2, dtype=torch.float64)  # [..extras, weight sum, count]
        self.numel = 0
        self.per_coordinate = False
        self.dtype = torch.float32
        self._device: torch.device | None = None
        self._state_names: list[str] = []
        self._sum_buffer: SumBuffer | None = None

    # ------------------------------------------------------------------ provided
    def bind(
        self,
        numel: int,
        device: torch.device,
        extra_numel: int = 0,
        per_coordinate: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """Allocate the state for flat updates of ``numel`` elements on ``device`` (called at fit start): the
        float64 ``extra`` vector (``extra_numel`` side values, the weight sum, the count), then whatever
        :meth:`declare` adds. ``per_coordinate``: updates come with a coverage (which coordinates each client
        held). ``dtype``: that of the updates (the global state's: float64 for a ``64-true`` module)."""
        if per_coordinate and not self.supports_coverage:
            raise FederatedConfigError(
                f"{type(self).__name__} cannot combine updates of clients that hold different parts of the model "
                "(Federated Dropout); use WeightedMeanAggregator"
            )
        self.numel = int(numel)
        self.per_coordinate = per_coordinate
        self.dtype = dtype
        for name in self._state_names:
            delattr(self, name)
        self._state_names = []
        self._sum_buffer = None
        self._device = device
        self.extra = torch.zeros(extra_numel + 2, dtype=torch.float64, device=device)
        try:
            self.declare(self.numel)
        finally:
            self._device = None

    def add_state(self, name: str, numel: int, dtype: torch.dtype | None = None) -> None:
        """Declare a sum-state (``dist_reduce_fx="sum"`` in torchmetrics' terms), from :meth:`declare`: a zeroed
        flat tensor of ``numel`` elements of ``dtype`` (default: the updates' dtype) on the bound device, set as
        attribute ``name``, zeroed by :meth:`reset` and summed over all processes once per round.

        Raises:
            FederatedRuntimeError: If called outside :meth:`declare`.
            FederatedConfigError: If ``name`` is not a free identifier or ``numel`` is negative.
        """
        if self._device is None:
            raise FederatedRuntimeError(
                f"{type(self).__name__}.add_state({name!r}) must be called from declare(), during bind()"
            )
        if not name.isidentifier() or name.startswith("_") or name in self._state_names or hasattr(type(self), name):
            raise FederatedConfigError(
                f"add_state name must be a new public identifier that is not a class attribute of "
                f"{type(self).__name__}, got {name!r}"
            )
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise FederatedConfigError(f"add_state numel must be an int >= 0, got {numel!r}")
        setattr(self, name, torch.zeros(numel, dtype=dtype or self.dtype, device=self._device))
        self._state_names.append(name)

    def sum_states(self) -> list[torch.Tensor]:
        """Every state summed over processes: ``extra`` first, then the declared states in declaration order."""
        return [self.extra, *(getattr(self, name) for name in self._state_names)]

    def reset(self) -> None:
        """Zero every sum-state and :meth:`clear` the rest, for a new round."""
        for state in self.sum_states():
            state.zero_()
        self.clear()

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
        self.accumulate(delta, weight, coverage)
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
        """Sum the states of all processes of the default group in one all-reduce, then :meth:`gather` (a no-op
        in one process). The federated runtime does this itself, with its own sums in the same all-reduce."""
        if is_distributed():
            self._sum_buffer = all_reduce_sums(self.sum_states(), self._sum_buffer)
            self.gather()

    # ------------------------------------------------------------------ overridden by aggregators
    @abstractmethod
    def declare(self, numel: int) -> None:
        """Declare the sum-states with :meth:`add_state` for updates of ``numel`` elements (``self.per_coordinate``
        and ``self.dtype`` are set), and allocate any other state."""

    @abstractmethod
    def accumulate(self, delta: torch.Tensor, weight: float, coverage: torch.Tensor | None) -> None:
        """Add one update with its weight; ``coverage`` is given exactly when bound ``per_coordinate``."""

    @abstractmethod
    def compute(self, denominator: float | None = None) -> torch.Tensor:
        """The aggregated update. ``denominator`` replaces the sum of weights (aggregation over all clients): the
        estimate is scaled by ``weight_sum / denominator``.

        Returns:
            A new flat tensor; zeros when nothing was added.
        """

    def clear(self) -> None:
        """Forget per-round state that is not a sum-state (default: there is none); called by :meth:`reset`."""
        return

    def gather(self) -> None:
        """Combine per-round state that is not a sum (kept rows), after the sum-states were reduced; called on
        every process, also in a single one (default: nothing to do)."""
        return

    def __repr__(self) -> str:
        hidden = {*_STATE, *self._state_names}
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k not in hidden)
        return f"{type(self).__name__}({args})"


_STATE = ("extra", "numel", "weighted_sum", "per_coordinate", "coordinate_weight", "dtype")


class WeightedMeanAggregator(Aggregator):
    """Accumulates ``sum_k w_k * delta_k`` and ``sum_k w_k`` over the clients of a round: FedAvg's mean.

    With ``per_coordinate`` binding (Federated Dropout) it also sums ``w_k`` per coordinate over the clients that
    held the coordinate, and divides each coordinate by that sum; coordinates no client held get a zero update.

    State is preallocated once and updated in place; :meth:`reset` starts a round, :meth:`update` adds a
    client, :meth:`sync` sums the state over all processes (one all-reduce of every sum-state), :meth:`compute`
    divides.

    Args:
        numel: Length of a flat update; ``None`` defers allocation to :meth:`bind` (as
            :class:`~lightning_fl.FederatedAveraging` does).
        device: Where the state lives (default CPU).
        extra_numel: Length of an optional float64 side vector summed alongside, unweighted, for callers that
            sum values of their own with the updates (the federated runtime uses none).

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

    def declare(self, numel: int) -> None:
        """The weighted sum, and the per-coordinate weight sum when bound ``per_coordinate``."""
        self.add_state("weighted_sum", numel)
        self.coordinate_weight = None
        if self.per_coordinate:
            self.add_state("coordinate_weight", numel)

    def accumulate(self, delta: torch.Tensor, weight: float, coverage: torch.Tensor | None) -> None:
        """``weighted_sum += weight * delta`` (and ``coordinate_weight += weight * coverage``)."""
        self.weighted_sum.add_(delta, alpha=weight)
        if coverage is not None:
            assert self.coordinate_weight is not None
            self.coordinate_weight.add_(coverage, alpha=weight)

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
