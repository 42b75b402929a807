"""Weighted federated mean, built like a ``torchmetrics.MeanMetric``: a weighted sum and a weight sum, reduced
across processes in one all-reduce, divided at the end."""

from __future__ import annotations

import torch
import torch.distributed as dist


class WeightedMeanAggregator:
    """Accumulates ``sum_k w_k * delta_k`` and ``sum_k w_k`` over the clients of a round.

    State is preallocated once and updated in place; :meth:`reset` starts a round, :meth:`update` adds a
    client, :meth:`sync` sums the state over all processes (one all-reduce of the model-size vector and one of
    the small float64 extras), :meth:`compute` divides.

    Args:
        numel: Length of a flat update.
        device: Where the state lives.
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

    def __init__(self, numel: int, device: torch.device, extra_numel: int = 0) -> None:
        self.weighted_sum = torch.zeros(numel, dtype=torch.float32, device=device)
        self.extra = torch.zeros(extra_numel + 2, dtype=torch.float64, device=device)  # [..extras, weight, count]

    def reset(self) -> None:
        """Zero the state for a new round."""
        self.weighted_sum.zero_()
        self.extra.zero_()

    @torch.no_grad()
    def update(self, delta: torch.Tensor, weight: float, extra: torch.Tensor | None = None) -> None:
        """Add one client's ``delta`` with ``weight`` (its sample count), and ``extra`` unweighted."""
        self.weighted_sum.add_(delta, alpha=weight)
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
        """Sum the state over all processes of the default group (a no-op in one process)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.weighted_sum)
            dist.all_reduce(self.extra)

    def compute(self, denominator: float | None = None) -> torch.Tensor:
        """The weighted mean: ``weighted_sum / denominator`` (default: the sum of weights).

        Returns:
            The mean update; zeros when nothing was added.
        """
        denom = self.weight_sum if denominator is None else denominator
        if denom <= 0:
            return torch.zeros_like(self.weighted_sum)
        return self.weighted_sum / denom
