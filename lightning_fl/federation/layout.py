"""What the runtime needs of a client's submodel layout (Federated Dropout gives one), as protocols.

The runtime never imports an algorithm: :class:`~lightning_fl.algorithms.federated_dropout.layout.ClientSubmodels`
satisfies :class:`ClientLayout` structurally.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

import torch

#: Bytes that tell a client which units it keeps: the 8-byte seed of the index draw.
SEED_BYTES = 8


class FlatLayout(Protocol):
    """A flat vector layout: allocates a zero vector with its per-tensor views."""

    @property
    def numel(self) -> int:
        """Entries of the flat vector."""

    def new_flat(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A zero vector in this layout, with its views."""


class ClientLayout(Protocol):
    """The clients' submodels: which entries of the global flat vector a client holds, and the cut and scatter."""

    @property
    def layout(self) -> FlatLayout:
        """The flat layout of a client's submodel."""

    def select(self, round_idx: int, client_id: int) -> torch.Tensor:
        """The positions, in the global flat vector, of the entries ``client_id`` holds in ``round_idx``."""

    def gather(self, full: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> None:
        """Cut the submodel at ``index`` out of ``full`` into ``out``."""

    def scatter(self, small: torch.Tensor, index: torch.Tensor, out: torch.Tensor, coverage: torch.Tensor) -> None:
        """Scatter a submodel's ``small`` vector into the full-size ``out``; mark the covered coordinates."""

    def shrink(self) -> None:
        """Shrink the module to the selected client's submodel."""

    def restore(self) -> None:
        """Give the module back its full size."""

    def applied(self, round_idx: int, client_id: int) -> AbstractContextManager[None]:
        """The module shrunk to a client's submodel for a ``with`` block (for counting its FLOPs)."""
