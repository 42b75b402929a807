"""What an algorithm sees of the runtime: the fit, one client's training, one round (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

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
    """

    state: FlatState
    datamodule: FederatedDataModule
    seed: int
    rank: int
    world_size: int
    local_names: frozenset[str]


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
