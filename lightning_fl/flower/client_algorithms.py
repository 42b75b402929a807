"""Algorithms whose work is all on the client (FedProx), run on a Flower client as ``lightning-fl fit`` runs them.

An algorithm callback sees the runtime only through its contexts (:mod:`lightning_fl.federation.context`), so a
Flower client hands it the same ones: a :class:`~lightning_fl.federation.context.FederatedContext` once, then per
round a :class:`~lightning_fl.federation.context.ClientContext` through a
:class:`~lightning_fl.federation.cursor.RoundCursor`, and the algorithm goes into the client's Trainer for its
Lightning hooks. Algorithms that also act on the server (SCAFFOLD's control variates, differential privacy's noise on
the sum, robust or asynchronous rounds) are refused at app start by :func:`check_client_side`.
"""

from __future__ import annotations

import torch

from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.context import ClientContext, FederatedContext
from lightning_fl.federation.cursor import RoundCursor
from lightning_fl.federation.flat import FlatState
from lightning_fl.federation.host import FederatedAveraging
from lightning_fl.federation.layout import WholeModel
from lightning_fl.seeding import derive_seed

__all__ = ["CLIENT_SIDE_ALGORITHMS", "ClientAlgorithms", "check_client_side"]

#: Algorithms whose every hook runs on the client (``on_client_start``, Lightning hooks, ``on_client_update``).
CLIENT_SIDE_ALGORITHMS = frozenset({"FedProx"})


def check_client_side(algorithms: list[FederatedAlgorithm]) -> None:
    """Refuse algorithms a Flower run cannot reproduce.

    Raises:
        FederatedConfigError: Naming them.
    """
    refused = [type(a).__name__ for a in algorithms if type(a).__name__ not in CLIENT_SIDE_ALGORITHMS
               or type(a).__module__.split(".")[0] != "lightning_fl"]
    if refused:
        raise FederatedConfigError(f"the Flower apps run only the client-side algorithms "
                                   f"{sorted(CLIENT_SIDE_ALGORITHMS)}; remove {refused} from trainer.callbacks")


class ClientAlgorithms:
    """The config's client-side algorithms on one Flower client process.

    Args:
        algorithms: The algorithm callbacks (checked by :func:`check_client_side`).
        state: The client's model as flat tensors.
        datamodule: The data module.
        averaging: The config's server callback.
        seed: The federated seed.
    """

    def __init__(self, algorithms: list[FederatedAlgorithm], state: FlatState, datamodule: FederatedDataModule,
                 averaging: FederatedAveraging, seed: int) -> None:
        self.algorithms = sorted(algorithms, key=lambda a: a.order)
        self.state = state
        self.cursor = RoundCursor()
        self._param_positions = [i for i, spec in enumerate(state.float_specs) if spec.is_parameter]
        context = FederatedContext(
            state, datamodule, seed, 0, 1, frozenset(), layout=WholeModel(state), aggregation=averaging.aggregation,
            aggregator=averaging.aggregator, round=self.cursor, load_client_tensors=lambda client_id: None,
            estimate_payload_bytes=lambda: (0.0, 0.0), seed_for=lambda *keys: derive_seed(seed, *keys),
        )
        for algorithm in self.algorithms:
            algorithm.on_federated_fit_start(context)

    def start(self, round_idx: int, client_id: int, num_samples: int, num_batches: int,
              start_views: list[torch.Tensor]) -> None:
        """The client's starting weights are in the module: hand the algorithms its context."""
        if not self.algorithms:
            return
        client = ClientContext(round_idx, client_id, num_samples, num_batches,
                               params=[self.state.module_float[i] for i in self._param_positions],
                               start_weights=[start_views[i] for i in self._param_positions])
        self.cursor.enter_client(client_id, client)
        for algorithm in self.algorithms:
            algorithm.on_client_start(client)

    def finish(self, update: tuple[torch.Tensor, list[torch.Tensor]] | None) -> None:
        """The client's update (flat, and per tensor) before the uplink codec, which the algorithms may change in
        place, or ``None`` when it is dropped (not finite); the client's turn ends."""
        client = self.cursor.client
        if client is not None and update is not None:
            for algorithm in self.algorithms:
                algorithm.on_client_update(client, *update)
        self.cursor.leave_client()
