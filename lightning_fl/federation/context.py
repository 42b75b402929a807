"""What an algorithm sees of the runtime: the fit, one client's training, one round (frozen dataclasses)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from lightning_fl.exceptions import FederatedRuntimeError

if TYPE_CHECKING:
    from lightning_fl.datamodules.federated import FederatedDataModule
    from lightning_fl.federation.cursor import RoundView
    from lightning_fl.federation.flat import FlatState
    from lightning_fl.federation.layout import ClientLayout
    from lightning_fl.server.aggregator import Aggregator

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
        layout: What a client holds of the model (:class:`~lightning_fl.federation.layout.WholeModel` unless an
            algorithm gives clients submodels); ``with layout.applied(round_idx, client_id):`` shows the module as
            that client trains it.
        aggregation: The server callback's ``aggregation`` (``"selected"`` or ``"all"``).
        aggregator: The aggregator that combines the round's updates.
        round: Where the fit is in the current round (:class:`~lightning_fl.federation.cursor.RoundView`: the plan,
            the client training now, the client of a batch).
        load_client_tensors: ``load_client_tensors(client_id)`` writes the client's own tensors (those that never
            leave it) into the module, asking every algorithm.
        estimate_payload_bytes: ``() -> (downlink, uplink)`` bytes of one client's model and update through the
            server callback's codecs, on the initial global model (exact for codecs whose size depends only on the
            shapes).
        seed_for: ``seed_for(*keys)`` = ``derive_seed(seed, *keys)``; the uplink's codec seed of tensor ``name`` of
            a client is ``seed_for("uplink", round_idx, client_id, name)``.
        add_sum_state: The runtime's ``RoundReducer.add_state``; use :meth:`sum_state`.
    """

    state: FlatState
    datamodule: FederatedDataModule
    seed: int
    rank: int
    world_size: int
    local_names: frozenset[str]
    layout: ClientLayout
    aggregation: Literal["selected", "all"]
    aggregator: Aggregator
    round: RoundView
    load_client_tensors: Callable[[int], None]
    estimate_payload_bytes: Callable[[], tuple[float, float]]
    seed_for: Callable[..., int]
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
    """One client's training in one round.

    Attributes:
        round_idx: The round.
        client_id: The client.
        num_samples: Its training samples (its default weight in the mean).
        num_batches: The batches (local steps) it runs in this round on this rank, as the round's plan says.
        params: The module's trainable parameters, as the client trains them.
        start_weights: Aligned with ``params``: the weights the client started from (the global model as the
            downlink delivered it, or an older version it downloaded); constant during its training.
    """

    round_idx: int
    client_id: int
    num_samples: int
    num_batches: int
    params: list[torch.Tensor]
    start_weights: list[torch.Tensor]


@dataclass(frozen=True)
class RoundContext:
    """One round, as every rank sees it after the all-reduce.

    Attributes:
        round_idx: The round.
        clients: The round's sampled clients (all ranks), sorted.
        reported: Client updates aggregated over all ranks (rejected ones excluded).
        is_last: Whether this is the fit's last round (``max_epochs - 1``).
        downlink_bytes: Payload bytes sent to the round's clients (all ranks).
        uplink_bytes: Payload bytes the round's clients sent back (all ranks).
        senders: Clients that sent an update (all ranks; rejected ones included).
        rejected: Client updates dropped as not finite (all ranks).
        refused: Whether the server refused the round (a non-finite aggregate or server step: the global model
            was kept); known from ``on_round_end`` on, ``False`` in ``on_round_synced``.
    """

    round_idx: int
    clients: np.ndarray
    reported: int
    is_last: bool
    downlink_bytes: int
    uplink_bytes: int
    senders: int
    rejected: int
    refused: bool = False
