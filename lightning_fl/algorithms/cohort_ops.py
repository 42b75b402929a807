"""Gradient arithmetic shared by the algorithms that act on every optimizer step, in both training modes.

Sequential mode steps one client's parameters; vectorized mode (``FederatedAveraging(vectorize=...)``) steps a
chunk of clients' parameters stacked as ``[K, *shape]``, with slot ``k`` of every tensor belonging to client ``k``
(:class:`~lightning_fl.federation.cohort_context.CohortContext`). These helpers do per slot exactly what the
sequential hooks do per client, so a client gets the same numbers in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["add_to_active", "steps_parameters"]


@torch.no_grad()
def add_to_active(
    targets: Sequence[torch.Tensor], sources: Sequence[torch.Tensor], active: torch.Tensor, alpha: float = 1.0,
    flags: Sequence[bool] | None = None,
) -> None:
    """``targets[i][k] += alpha * sources[i][k]`` for the active slots ``k``; inactive slots keep their values.

    Each active slot is computed with the same kernel as a client's own tensors in sequential mode
    (``torch._foreach_add_`` when every slot is active, ``torch.add(..., alpha=alpha)`` then a select otherwise), so
    the numbers are those of that client alone. An inactive slot's gradient stays as the runtime left it (zero), so
    its weights are not moved by the correction.

    Args:
        targets: Stacked tensors ``[K, *shape]``, changed in place.
        sources: Aligned with ``targets``, same shapes (or broadcastable to them).
        active: ``bool`` tensor ``[K]``: the slots that take this step.
        alpha: Factor of ``sources``.
        flags: ``active`` as Python booleans when known on the host (spares a device synchronisation).

    Example:
        >>> grad = torch.zeros(3, 2)
        >>> add_to_active([grad], [torch.ones(3, 2)], torch.tensor([True, False, True]), alpha=0.5)
        >>> grad
        tensor([[0.5000, 0.5000],
                [0.0000, 0.0000],
                [0.5000, 0.5000]])
    """
    if not targets:
        return
    if all(flags) if flags is not None else bool(active.all()):
        torch._foreach_add_(list(targets), list(sources), alpha=alpha)
        return
    for target, source in zip(targets, sources, strict=True):
        mask = active.to(target.device).view(-1, *([1] * (target.dim() - 1)))
        target.copy_(torch.where(mask, torch.add(target, source, alpha=alpha), target))


def steps_parameters(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> bool:
    """Whether ``optimizer`` steps any of the module's own parameters ``params`` (sequential mode), rather than
    stacked copies of them (vectorized mode swaps the optimizer's parameters for the chunk's stacked tensors, and an
    algorithm then acts in ``on_before_cohort_step`` instead of ``on_before_optimizer_step``).

    Example:
        >>> layer = torch.nn.Linear(2, 1)
        >>> steps_parameters(torch.optim.SGD(layer.parameters(), lr=0.1), list(layer.parameters()))
        True
        >>> stacked = [torch.zeros(3, *p.shape, requires_grad=True) for p in layer.parameters()]
        >>> steps_parameters(torch.optim.SGD(stacked, lr=0.1), list(layer.parameters()))
        False
    """
    ids = {id(p) for p in params}
    return any(id(p) in ids for group in optimizer.param_groups for p in group["params"])
