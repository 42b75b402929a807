"""The config's algorithms on a Flower client and server, run through the runtime's own contexts.

An algorithm callback sees the runtime only through its contexts (:mod:`lightning_fl.federation.context`), so Flower
hands it the same ones: a :class:`~lightning_fl.federation.context.FederatedContext` once on each side, then per
round on a client a :class:`~lightning_fl.federation.context.ClientContext` (through a
:class:`~lightning_fl.federation.cursor.RoundCursor`; the algorithm also goes into the client's Trainer for its
Lightning hooks) and on the server the round's :class:`~lightning_fl.federation.context.RoundContext`. What crosses
the wire is in :mod:`lightning_fl.flower.algorithm_state`. Supported: FedProx (all on the client) and SCAFFOLD;
anything else is refused at app start by :func:`check_supported`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from flwr.app import ArrayRecord, RecordDict

from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.context import ClientContext, FederatedContext, RoundContext
from lightning_fl.federation.cursor import RoundCursor
from lightning_fl.federation.flat import FlatState
from lightning_fl.federation.host import FederatedAveraging
from lightning_fl.federation.layout import WholeModel
from lightning_fl.flower.algorithm_state import DeclaredSums, ScaffoldVariates
from lightning_fl.seeding import derive_seed
from lightning_fl.server.aggregator import Aggregator

__all__ = ["SUPPORTED_ALGORITHMS", "ClientAlgorithms", "ServerAlgorithms", "check_supported"]

#: Algorithms a Flower run reproduces exactly.
SUPPORTED_ALGORITHMS = frozenset({"FedProx", "Scaffold"})


def check_supported(algorithms: list[FederatedAlgorithm]) -> None:
    """Refuse algorithms a Flower run cannot reproduce.

    Raises:
        FederatedConfigError: Naming them.

    Example:
        >>> from lightning_fl.algorithms.fedprox import FedProx
        >>> check_supported([FedProx(mu=0.1)])
    """
    refused = [type(a).__name__ for a in algorithms if type(a).__name__ not in SUPPORTED_ALGORITHMS
               or type(a).__module__.split(".")[0] != "lightning_fl"]
    if refused:
        raise FederatedConfigError(f"the Flower apps run only the algorithms {sorted(SUPPORTED_ALGORITHMS)}; "
                                   f"remove {refused} from trainer.callbacks")


class _Algorithms:
    """What both sides share: the algorithms in hook order, their sums, SCAFFOLD's variates, the fit's context."""

    def __init__(self, algorithms: list[FederatedAlgorithm], state: FlatState, datamodule: FederatedDataModule,
                 averaging: FederatedAveraging, seed: int,
                 allocate: Callable[[str, int, torch.dtype], torch.Tensor] | None) -> None:
        self.algorithms = sorted(algorithms, key=lambda a: a.order)
        self.state = state
        self.cursor = RoundCursor()
        self.sums = DeclaredSums(allocate)
        self.variates = ScaffoldVariates(self.algorithms)
        context = FederatedContext(
            state, datamodule, seed, 0, 1, frozenset(), layout=WholeModel(state), aggregation=averaging.aggregation,
            aggregator=averaging.aggregator, round=self.cursor, load_client_tensors=lambda client_id: None,
            estimate_payload_bytes=lambda: (0.0, 0.0), seed_for=lambda *keys: derive_seed(seed, *keys),
            add_sum_state=self.sums.add_state,
        )
        for algorithm in self.algorithms:
            algorithm.on_federated_fit_start(context)


class ClientAlgorithms(_Algorithms):
    """The config's algorithms on one Flower client process (a client's zeroed sums allocated here)."""

    def __init__(self, algorithms: list[FederatedAlgorithm], state: FlatState, datamodule: FederatedDataModule,
                 averaging: FederatedAveraging, seed: int) -> None:
        super().__init__(algorithms, state, datamodule, averaging, seed, allocate=None)
        self._param_positions = [i for i, spec in enumerate(state.float_specs) if spec.is_parameter]

    def start(self, round_idx: int, client_id: int, num_samples: int, num_batches: int,
              start_views: list[torch.Tensor], received: object, node_state: RecordDict) -> None:
        """The client's starting weights are in the module: take what the server sent for the algorithms
        (``received``), load the node's own state and hand the algorithms the client's context."""
        if not self.algorithms:
            return
        self.variates.receive(received, node_state, client_id)
        self.sums.zero()
        client = ClientContext(round_idx, client_id, num_samples, num_batches,
                               params=[self.state.module_float[i] for i in self._param_positions],
                               start_weights=[start_views[i] for i in self._param_positions])
        self.cursor.enter_client(client_id, client)
        for algorithm in self.algorithms:
            algorithm.on_client_start(client)

    def finish(self, update: tuple[torch.Tensor, list[torch.Tensor]] | None, node_state: RecordDict
               ) -> ArrayRecord | None:
        """The client's update (flat, and per tensor) before the uplink codec, which the algorithms may change in
        place, or ``None`` when it is dropped (not finite). Returns the client's shares of the declared sums
        (``None`` when none are declared)."""
        client = self.cursor.client
        if client is None or update is None:
            self.cursor.leave_client()
            return None
        for algorithm in self.algorithms:
            algorithm.on_client_update(client, *update)
        self.cursor.leave_client()
        self.variates.keep(node_state, client.client_id)
        return self.sums.encode(client.round_idx, client.client_id) if self.sums.states else None


class ServerAlgorithms(_Algorithms):
    """The config's algorithms on the Flower server: their sums live in the round's reducer.

    Args:
        allocate: The reducer's ``add_state``.
    """

    def __init__(self, algorithms: list[FederatedAlgorithm], state: FlatState, datamodule: FederatedDataModule,
                 averaging: FederatedAveraging, seed: int,
                 allocate: Callable[[str, int, torch.dtype], torch.Tensor]) -> None:
        super().__init__(algorithms, state, datamodule, averaging, seed, allocate=allocate)

    def down(self, round_idx: int, client_id: int) -> tuple[ArrayRecord | None, int]:
        """What a client's algorithms need of the server's state (SCAFFOLD's ``c``), and its payload bytes."""
        return self.variates.encode(round_idx, client_id)

    def decode_sums(self, record: object) -> tuple[list[torch.Tensor], int]:
        """A client's shares of the declared sums, decoded untrusted (nothing without declared sums), and their
        payload bytes."""
        return self.sums.decode(record) if self.sums.states else ([], 0)

    def synced(self, round_context: RoundContext, aggregator: Aggregator) -> None:
        """After the round's sums are complete, before the server step (``on_round_synced``)."""
        for algorithm in self.algorithms:
            algorithm.on_round_synced(round_context, aggregator)

    def round_end(self, trainer: "pl.Trainer", round_context: RoundContext) -> None:
        """After the new global model is in the module (``on_round_end``; metrics are not logged on Flower)."""
        for algorithm in self.algorithms:
            algorithm.on_round_end(trainer, round_context)
