"""Which tensors of the global state travel between the server and the clients: all but the personal ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

from lightning_fl.federation.flat import FlatState

T = TypeVar("T")


class WireSelection:
    """Splits the flat state's tensors into shared ones (sent, averaged, counted in the bytes) and local ones
    (personal layers: they never leave a client).

    Args:
        state: The global state.
        local_names: Names of local tensors, floating or integer.

    Example:
        >>> from torch import nn
        >>> wire = WireSelection(FlatState(nn.Linear(2, 1), torch.device("cpu")), {"bias"})
        >>> wire.shared_of(["weight", "bias"]), wire.local_of(["weight", "bias"])
        (['weight'], ['bias'])
    """

    def __init__(self, state: FlatState, local_names: set[str] | frozenset[str]) -> None:
        self.local = [i for i, s in enumerate(state.float_specs) if s.name in local_names]
        self.shared = [i for i, s in enumerate(state.float_specs) if s.name not in local_names]
        self.local_int = [(s.offset, s.numel) for s in state.int_specs if s.name in local_names]
        self.shared_int = [i for i, s in enumerate(state.int_specs) if s.name not in local_names]
        #: Whether every tensor is shared (plain FedAvg: selection is the identity and costs nothing).
        self.everything = not self.local and not self.local_int

    def shared_of(self, items: Sequence[T]) -> list[T]:
        """The items (aligned with ``state.float_specs``) of shared tensors."""
        return list(items) if not self.local else [items[i] for i in self.shared]

    def local_of(self, items: Sequence[T]) -> list[T]:
        """The items (aligned with ``state.float_specs``) of local tensors."""
        return [items[i] for i in self.local]

    def shared_int_of(self, items: Sequence[T]) -> list[T]:
        """The items (aligned with ``state.int_specs``) of shared integer tensors."""
        return list(items) if not self.local_int else [items[i] for i in self.shared_int]

    @torch.no_grad()
    def client_start(
        self,
        source: torch.Tensor,
        source_views: list[torch.Tensor],
        received: Sequence[torch.Tensor],
        lossless: bool,
        buffer: torch.Tensor,
        buffer_views: list[torch.Tensor],
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The weights a client starts from, as a flat vector and its views. ``source`` is what the server sends (the
        global state, or the client's submodel cut from it). When the downlink is lossless and every tensor is shared
        that is ``source`` itself (no copy); otherwise ``buffer`` filled with ``source`` and the ``received``
        (decoded) shared tensors. Local tensors keep the global values there until the client's own copy is written
        over them.
        """
        if lossless and self.everything:
            return source, source_views
        if not self.everything:
            buffer.copy_(source)
        if not lossless:
            torch._foreach_copy_(self.shared_of(buffer_views), list(received))
        return buffer, buffer_views

    @torch.no_grad()
    def zero_local(self, views: Sequence[torch.Tensor]) -> None:
        """Zero the local tensors of an update (``views``: per float tensor), so they are neither averaged nor
        stepped."""
        if self.local:
            torch._foreach_zero_(self.local_of(views))

    @torch.no_grad()
    def zero_local_int(self, int_flat: torch.Tensor) -> None:
        """Zero the local integer buffers' increments in ``int_flat`` (laid out like ``state.int_flat``)."""
        for offset, numel in self.local_int:
            int_flat[offset : offset + numel] = 0
