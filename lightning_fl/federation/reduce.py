"""The round's reduction across processes: every sum of the round combined in ONE all-reduce.

What is summed: the aggregator's declared sum-states (:meth:`~lightning_fl.server.aggregator.Aggregator.sum_states`:
its float64 ``extra`` vector, which carries the integer-buffer increments and the round's four counters, then the
weighted sums), and every state an algorithm declared with :meth:`RoundReducer.add_state` (through
``FederatedContext.sum_state``: SCAFFOLD's control-variate sum). They are packed into one float64 buffer and
reduced by :func:`~lightning_fl.server.reduce.all_reduce_sums`; in one process nothing is communicated.
"""

from __future__ import annotations

import torch

from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError
from lightning_fl.server.aggregator import Aggregator
from lightning_fl.server.reduce import SumBuffer, all_reduce_sums

__all__ = ["RoundReducer"]


class RoundReducer:
    """Adds this rank's round counters to the aggregator's extra sums and combines all ranks' sums in one
    all-reduce, the algorithms' declared states included.

    The counters (downlink bytes, uplink bytes, rejected updates, senders) travel in the last four extra entries,
    after the integer-buffer increments.

    Example:
        >>> from lightning_fl.server import WeightedMeanAggregator
        >>> reducer, agg = RoundReducer(), WeightedMeanAggregator()
        >>> agg.bind(2, torch.device("cpu"), extra_numel=1 + RoundReducer.COUNTERS)
        >>> reducer.bind(agg, int_numel=1, device=torch.device("cpu"))
        >>> drift = reducer.add_state("drift", 2)
        >>> extras, counters = reducer.reduce((10, 20, 0, 1))
        >>> counters, drift.dtype
        ((10, 20, 0, 1), torch.float64)
    """

    COUNTERS = 4

    def __init__(self) -> None:
        self._aggregator: Aggregator | None = None
        self.int_numel = 0
        self._device: torch.device | None = None
        self._states: dict[str, torch.Tensor] = {}
        self._buffer: SumBuffer | None = None

    def bind(self, aggregator: Aggregator, int_numel: int, device: torch.device) -> None:
        """At fit start, before the algorithms declare their states: the bound aggregator (``extra_numel`` =
        ``int_numel + 4``), the number of integer-buffer entries at the front of its extras, and the device of
        the sums. Forgets the states of an earlier fit."""
        self._aggregator, self.int_numel, self._device = aggregator, int(int_numel), device
        self._states = {}
        self._buffer = None

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
        """Zero the declared states for a new round (the aggregator resets its own)."""
        for tensor in self._states.values():
            tensor.zero_()

    @property
    def aggregator(self) -> Aggregator:
        """The bound aggregator."""
        if self._aggregator is None:
            raise FederatedRuntimeError("the round reducer is bound at fit start; the fit has not started")
        return self._aggregator

    def reduce(self, counters: tuple[int, int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """Sum the round over all ranks in one all-reduce, then let the aggregator :meth:`~Aggregator.gather`;
        returns the extras on the CPU and the counters summed over ranks."""
        agg, n_int = self.aggregator, self.int_numel
        agg.extras[n_int : n_int + self.COUNTERS] += torch.tensor(counters, dtype=torch.float64,
                                                                  device=agg.extras.device)
        self._buffer = all_reduce_sums([*agg.sum_states(), *self._states.values()], self._buffer)
        agg.gather()
        extras = agg.extras.cpu()
        down_bytes, up_bytes, rejected, senders = (int(v) for v in extras[n_int : n_int + self.COUNTERS].tolist())
        return extras, (down_bytes, up_bytes, rejected, senders)
