"""What a client holds of the global model: the protocol the runtime moves models and updates through.

The runtime owns this seam. By default a client holds the whole model (:class:`WholeModel`); an algorithm that gives
clients smaller models (Federated Dropout's :class:`~lightning_fl.algorithms.federated_dropout.layout.ClientSubmodels`)
answers :meth:`~lightning_fl.federation.algorithm.FederatedAlgorithm.client_layout` with its own layout (and declares
``provides_submodels = True``); every other algorithm in the Trainer must declare ``supports_submodels = True``. The
runtime never imports an algorithm: the layouts satisfy :class:`ClientLayout` structurally.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import torch

from lightning_fl.federation.flat import FlatState

__all__ = ["SEED_BYTES", "ClientLayout", "WholeModel"]

#: Bytes that tell a client which units it keeps (Federated Dropout): the 8-byte seed of the index draw.
SEED_BYTES = 8


class ClientLayout(Protocol):
    """The layout of the model a client trains, as a flat vector, and the moves between it and the global one.

    Attributes:
        per_coordinate: Whether clients hold different parts of the model, so that the server weighs every
            coordinate by the clients that held it (the aggregator then keeps a per-coordinate weight).
        downlink_extra_bytes: Bytes sent to a client besides the model to say which part it holds.
        numel: Entries of a client's flat vector.
    """

    @property
    def per_coordinate(self) -> bool: ...

    @property
    def downlink_extra_bytes(self) -> int: ...

    @property
    def numel(self) -> int: ...

    def new_flat(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A zero vector laid out like a client's model, with its per-tensor views."""
        ...

    def select(self, round_idx: int, client_id: int) -> torch.Tensor:
        """Choose the part ``client_id`` holds in ``round_idx``; returns its positions in the global flat vector."""
        ...

    def gather(self, full: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> None:
        """``out`` = the entries at ``index`` of the global flat vector ``full``."""
        ...

    def scatter(self, small: torch.Tensor, index: torch.Tensor, out: torch.Tensor, coverage: torch.Tensor) -> None:
        """``out`` = ``small`` at ``index``, zero elsewhere; ``coverage`` = 1 at ``index``, 0 elsewhere."""
        ...

    def shrink(self) -> None:
        """Make the module the client's model last selected (values are written by the caller)."""
        ...

    def restore(self) -> None:
        """Make the module the whole model again, holding the values it had before :meth:`shrink`."""
        ...

    def applied(self, round_idx: int, client_id: int) -> AbstractContextManager[None]:
        """The module as ``client_id``'s model in ``round_idx``, with the global values, for a ``with`` block."""
        ...


class WholeModel:
    """The default layout: every client holds the whole model, so every move is the identity.

    Example:
        >>> from torch import nn
        >>> layout = WholeModel(FlatState(nn.Linear(3, 2), torch.device("cpu")))
        >>> layout.numel, layout.per_coordinate, layout.downlink_extra_bytes
        (8, False, 0)
        >>> with layout.applied(0, 0):
        ...     pass
    """

    per_coordinate = False
    downlink_extra_bytes = 0

    def __init__(self, state: FlatState) -> None:
        self.state = state
        self.numel = state.numel

    def new_flat(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.state.new_flat()

    def select(self, round_idx: int, client_id: int) -> torch.Tensor:
        return torch.arange(self.numel, device=self.state.device)

    @torch.no_grad()
    def gather(self, full: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> None:
        out.copy_(full)

    @torch.no_grad()
    def scatter(self, small: torch.Tensor, index: torch.Tensor, out: torch.Tensor, coverage: torch.Tensor) -> None:
        out.copy_(small)
        coverage.fill_(1.0)

    def shrink(self) -> None:
        pass

    def restore(self) -> None:
        pass

    @contextmanager
    def applied(self, round_idx: int, client_id: int) -> Iterator[None]:
        yield
