"""The round's reduction across processes: every sum of the round combined in ONE all-reduce.

What is summed: the aggregator's declared sum-states (:meth:`~lightning_fl.server.aggregator.Aggregator.sum_states`:
its weight sum and count, then the weighted sums), the runtime's own float64 sum-states (the clients'
integer-buffer increments and the round's four counters, declared by :meth:`RoundReducer.bind`), and every state an
algorithm declared with :meth:`RoundReducer.add_state` (through ``FederatedContext.sum_state``: SCAFFOLD's
control-variate sum). They are packed into one float64 buffer and reduced by
:func:`~lightning_fl.server.reduce.all_reduce_sums`; in one process nothing is communicated.
"""

from __future__ import annotations

import torch

from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError
from lightning_fl.server.aggregator import Aggregator
from lightning_fl.server.reduce import SumBuffer, all_reduce_sums

__all__ = ["RoundReducer"]

Counters = tuple[int, int, int, int]


class RoundReducer:
    """The runtime's sum-states of a round and the one all-reduce that combines them with the aggregator's and the
    algorithms' over all ranks.

    The runtime owns two float64 sum-states, declared at :meth:`bind`: ``int_increments`` (the accepted clients'
    integer-buffer increments, such as BatchNorm's ``num_batches_tracked``, summed unweighted by
    :meth:`add_int_increments`) and ``counters`` (downlink bytes, uplink bytes, rejected updates, senders: this
    rank's tally, copied in by :meth:`reduce`). The aggregator keeps only what it declares itself.

    Example:
        >>> from lightning_fl.server import WeightedMeanAggregator
        >>> reducer, agg = RoundReducer(), WeightedMeanAggregator()
        >>> agg.bind(2, torch.device("cpu"))
        >>> reducer.bind(agg, int_numel=1, device=torch.device("cpu"))
        >>> drift = reducer.add_state("drift", 2)
        >>> agg.update(torch.tensor([1.0, 3.0]), weight=2.0)
        >>> reducer.add_int_increments(torch.tensor([5], dtype=torch.int64))
        >>> increments, counters = reducer.reduce((10, 20, 0, 1))
        >>> increments.tolist(), counters, drift.dtype, agg.extras.numel()
        ([5.0], (10, 20, 0, 1), torch.float64, 0)
    """

    COUNTERS = 4
    #: The names of the runtime's own sum-states (an algorithm cannot declare a state of the same name).
    INT_INCREMENTS, COUNTER_STATE = "fl.int_increments", "fl.counters"

    def __init__(self) -> None:
        self._aggregator: Aggregator | None = None
        self.int_numel = 0
        self._device: torch.device | None = None
        self._states: dict[str, torch.Tensor] = {}
        self._buffer: SumBuffer | None = None
        self.int_increments = torch.zeros(0, dtype=torch.float64)
        self.counters = torch.zeros(self.COUNTERS, dtype=torch.float64)

    def bind(self, aggregator: Aggregator, int_numel: int, device: torch.device) -> None:
        """At fit start, before the algorithms declare their states: the bound aggregator, the number of
        integer-buffer entries of the model and the device of the sums. Declares the runtime's two sum-states and
        forgets the states of an earlier fit."""
        self._aggregator, self.int_numel, self._device = aggregator, int(int_numel), device
        self._states = {}
        self._buffer = None
        self.int_increments = self.add_state(self.INT_INCREMENTS, self.int_numel)
        self.counters = self.add_state(self.COUNTER_STATE, self.COUNTERS)

    def add_state(self, name: str, numel: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """A zeroed flat tensor of ``numel`` elements summed over all processes in the round's all-reduce, zeroed
        again at every round's start (:meth:`reset`); the caller adds into it during the round and reads the sum
        in ``on_round_synced``.

        Raises:
            FederatedRuntimeError: Before :meth:`bind` (the fit has not started).
            FederatedConfigError: If ``name`` is already taken or ``numel`` is negative.
        """
        if self._device is None:
            raise FederatedRuntimeError(f"sum state {name!r} can only be declared once the fit has started")
        if name in self._states:
            raise FederatedConfigError(f"sum state name must be unique in a fit, got {name!r} twice")
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise FederatedConfigError(f"sum state numel must be an int >= 0, got {numel!r}")
        tensor = torch.zeros(numel, dtype=dtype, device=self._device)
        self._states[name] = tensor
        return tensor

    def reset(self) -> None:
        """Zero the runtime's and the algorithms' states for a new round (the aggregator resets its own)."""
        for tensor in self._states.values():
            tensor.zero_()

    @property
    def aggregator(self) -> Aggregator:
        """The bound aggregator."""
        if self._aggregator is None:
            raise FederatedRuntimeError("the round reducer is bound at fit start; the fit has not started")
        return self._aggregator

    @torch.no_grad()
    def add_int_increments(self, increments: torch.Tensor | None) -> None:
        """Add one accepted client's integer-buffer increments (``None``: the model has none), unweighted."""
        if increments is not None:
            self.int_increments[: increments.numel()] += increments.to(self.int_increments)

    @torch.no_grad()
    def reduce(self, counters: Counters) -> tuple[torch.Tensor, Counters]:
        """Copy this rank's ``counters`` into their state, sum the round over all ranks in one all-reduce, then let
        the aggregator :meth:`~Aggregator.gather`; returns the integer-buffer increments (float64, on the sums'
        device) and the counters summed over ranks."""
        agg = self.aggregator
        self.counters.copy_(torch.tensor(counters, dtype=torch.float64))
        self._buffer = all_reduce_sums([*agg.sum_states(), *self._states.values()], self._buffer)
        agg.gather()
        down_bytes, up_bytes, rejected, senders = (int(v) for v in self.counters.tolist())
        return self.int_increments.clone(), (down_bytes, up_bytes, rejected, senders)
