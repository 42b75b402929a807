"""What an algorithm sees of the runtime: the fit, one client's training, one round (frozen dataclasses)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from lightning_fl.exceptions import FederatedRuntimeError

if TYPE_CHECKING:
    from lightning_fl.datamodules.federated import FederatedDataModule
    from lightning_fl.federation.flat import FlatState

__all__ = ["ClientContext", "FederatedContext", "RoundContext"]


@dataclass(frozen=True)
class FederatedContext:
    """What an algorithm may use for a whole fit.

    Attributes:
        state: The global model as flat tensors (``state.flat``; trainable parameters first).
        datamodule: The data module (client sizes, local splits).
        seed: The federated seed (the server callback's, else the data module's).
        rank: This process's rank.
        world_size: Number of processes.
        local_names: Names of tensors that never leave the clients (personal layers).
        add_sum_state: The runtime's ``RoundReducer.add_state``; use :meth:`sum_state`.
    """

    state: FlatState
    datamodule: FederatedDataModule
    seed: int
    rank: int
    world_size: int
    local_names: frozenset[str]
    add_sum_state: Callable[[str, int, torch.dtype], torch.Tensor] | None = field(default=None, repr=False)

    def sum_state(self, name: str, numel: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """A zeroed flat tensor that the runtime sums over all processes in the round's one all-reduce, before
        ``on_round_synced``, and zeroes at every round's start. Declare it in ``on_federated_fit_start``.

        Raises:
            FederatedRuntimeError: If the context was built without the runtime's reducer.
        """
        if self.add_sum_state is None:
            raise FederatedRuntimeError("this FederatedContext has no round reducer: sum states need the server")
        return self.add_sum_state(name, numel, dtype)


@dataclass(frozen=True)
class ClientContext:
    """One client's training in one round."""

    round_idx: int
    client_id: int
    num_samples: int


@dataclass(frozen=True)
class RoundContext:
    """One round, as every rank sees it after the all-reduce.

    Attributes:
        round_idx: The round.
        clients: The round's sampled clients (all ranks), sorted.
        reported: Client updates aggregated over all ranks (rejected ones excluded).
        is_last: Whether this is the fit's last round (``max_epochs - 1``).
    """

    round_idx: int
    clients: np.ndarray
    reported: int
    is_last: bool
