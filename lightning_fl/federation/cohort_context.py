"""What an algorithm sees of one step of a cohort: a chunk of a round's clients trained at once (vectorized mode)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_fl.federation.context import ClientContext

__all__ = ["CohortContext"]


@dataclass(frozen=True)
class CohortContext:
    """One optimizer step of a chunk of clients trained as one computation (``FederatedAveraging(vectorize=...)``).

    Slot ``k`` of every stacked tensor belongs to ``clients[k]``. An algorithm that acts on each client's optimizer
    step (FedProx's proximal term, SCAFFOLD's correction) implements
    :meth:`~lightning_fl.federation.algorithm.FederatedAlgorithm.on_before_cohort_step` on these stacked tensors;
    their ``.grad`` holds each client's own gradient in its slot.

    Attributes:
        round_idx: The round.
        clients: Each slot's :class:`ClientContext`, as given to ``on_client_start`` (its ``params`` and
            ``start_weights`` are the module's at that client's start, not the stacked tensors).
        active: ``bool`` tensor ``[K]``: the slots that take this step (a client with fewer local steps than the
            chunk's longest is inactive after its last one; an inactive slot's weights are no longer read).
        params: The stacked trainable parameters, ``[K, *shape]`` each, in the order of ``ClientContext.params``.
        start_weights: The clients' starting weights, stacked like ``params``.
        active_flags: ``active`` as Python booleans, when the caller knows them on the host (the runtime does):
            reading them costs no device synchronisation. ``None``: read from ``active`` when asked.
    """

    round_idx: int
    clients: list[ClientContext]
    active: torch.Tensor
    params: list[torch.Tensor]
    start_weights: list[torch.Tensor]
    active_flags: tuple[bool, ...] | None = None

    @property
    def flags(self) -> tuple[bool, ...]:
        """Which slots take this step, as Python booleans (``active_flags``, else read once from ``active``)."""
        if self.active_flags is not None:
            return self.active_flags
        return tuple(bool(a) for a in self.active.tolist())

    @property
    def client_ids(self) -> list[int]:
        """The clients' ids, in slot order."""
        return [c.client_id for c in self.clients]
