"""The stacked state of a chunk of clients trained at once (vectorized mode)."""

from __future__ import annotations

import torch

from lightning_fl.federation.context import ClientContext
from lightning_fl.federation.exchange import ClientExchange
from lightning_fl.federation.flat import FlatState

__all__ = ["Slots"]


class Slots:
    """The stacked state of one chunk: every client's tensors in its slot ``k``, its start and its context.

    Args:
        state: The global state (the module's tensors by reference).
        size: ``K``, the chunk's clients.
    """

    def __init__(self, state: FlatState, size: int) -> None:
        self.state, self.size = state, size
        #: The stacked tensors, allocated at the first :meth:`take` (a client's submodel shapes are known then).
        self.floats: list[torch.Tensor] = []
        self.ints: list[torch.Tensor] = []
        #: Each slot's start (the exchange's start views when they are not the global state's), its submodel's
        #: positions (Federated Dropout) and its context.
        self.starts: list[list[torch.Tensor] | None] = [None] * size
        self.start_refs: list[list[torch.Tensor]] = [state.views] * size
        self.indexes: list[torch.Tensor | None] = [None] * size
        self.contexts: list[ClientContext | None] = [None] * size

    def _allocate(self) -> None:
        size = self.size
        self.floats = [torch.empty((size, *t.shape), dtype=t.dtype, device=t.device) for t in self.state.module_float]
        for stacked, tensor in zip(self.floats, self.state.module_float, strict=True):
            stacked.requires_grad_(tensor.requires_grad)
        self.ints = [torch.empty((size, *t.shape), dtype=t.dtype, device=t.device) for t in self.state.module_int]

    @torch.no_grad()
    def take(self, k: int, exchange: ClientExchange | None, context: ClientContext | None) -> None:
        """Copy the module's tensors (a client just started) into slot ``k``."""
        if not self.floats and not self.ints:
            self._allocate()
        for stacked, tensor in zip(self.floats + self.ints, self.state.module_float + self.state.module_int,
                                   strict=True):
            stacked[k].copy_(tensor)
        self.contexts[k] = context
        if exchange is not None:
            self.start_refs[k], self.indexes[k] = exchange.start_views, exchange.client_index
            if exchange.start_views is not self.state.views:
                self.starts[k] = [t.clone() for t in exchange.start_views]

    @torch.no_grad()
    def give(self, k: int, exchange: ClientExchange) -> None:
        """Copy slot ``k`` into the module, and its start back into the exchange (the client's last step is done)."""
        torch._foreach_copy_(self.state.module_float, [t[k] for t in self.floats])
        for tensor, stacked in zip(self.state.module_int, self.ints, strict=True):
            tensor.copy_(stacked[k])
        exchange.resume_client(self.start_refs[k], self.indexes[k])
        start = self.starts[k]
        if start is not None:
            torch._foreach_copy_(exchange.start_views, start)

    def stacked_starts(self, positions: list[int]) -> list[torch.Tensor]:
        """The slots' starting weights of the float tensors at ``positions``, stacked ``[K, *shape]``."""
        out = []
        for i in positions:
            rows = [s[i] if s is not None else refs[i] for s, refs in zip(self.starts, self.start_refs, strict=True)]
            out.append(torch.stack(rows))
        return out
