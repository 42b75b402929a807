"""The round's reduction across processes: every rank's sums combined before the server step."""

from __future__ import annotations

import torch

from lightning_fl.server.aggregator import Aggregator

__all__ = ["RoundReducer"]


class RoundReducer:
    """Adds this rank's round counters to the aggregator's extra sums and combines all ranks' sums.

    The counters (downlink bytes, uplink bytes, rejected updates, senders) travel in the last four extra entries,
    after the integer-buffer increments, so that one ``aggregator.sync()`` reduces them all.

    Args:
        aggregator: The bound aggregator (``extra_numel`` = integer entries + 4).
        int_numel: Number of integer-buffer entries at the front of the extras.
    """

    COUNTERS = 4

    def __init__(self, aggregator: Aggregator, int_numel: int) -> None:
        self.aggregator = aggregator
        self.int_numel = int_numel

    def reduce(self, counters: tuple[int, int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """Sum the round over all ranks; returns the extras on the CPU and the counters summed over ranks."""
        agg, n_int = self.aggregator, self.int_numel
        agg.extras[n_int : n_int + self.COUNTERS] += torch.tensor(counters, dtype=torch.float64,
                                                                  device=agg.extras.device)
        agg.sync()
        extras = agg.extras.cpu()
        down_bytes, up_bytes, rejected, senders = (int(v) for v in extras[n_int : n_int + self.COUNTERS].tolist())
        return extras, (down_bytes, up_bytes, rejected, senders)
