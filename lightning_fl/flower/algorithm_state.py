"""Algorithm state on the Flower wire: the sums algorithms declare travel up, SCAFFOLD's variates travel down.

In ``lightning-fl fit`` an algorithm adds into a sum-state it declared with ``context.sum_state`` while its clients
train, and the server reads the round's sum (SCAFFOLD: ``sum (c_i+ - c_i)``). On Flower each client's share of every
declared sum travels up as a raw payload next to its update (``"sum/<name>"``), and the server adds the accepted
clients' shares into the same states of its :class:`~lightning_fl.federation.reduce.RoundReducer`. What a client needs
of the server's algorithm state travels down next to the model: SCAFFOLD's server variate ``c``. A client's own
state (SCAFFOLD's ``c_i``) stays in its node's ``context.state``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from flwr.app import ArrayRecord, RecordDict

from lightning_fl.algorithms.scaffold import Scaffold
from lightning_fl.codecs.base import Identity
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.flower.payloads import WireTensors, decode_record, encode_record

__all__ = ["DeclaredSums", "ScaffoldVariates"]

#: The name of SCAFFOLD's server variate in the downlink's algorithm record.
SERVER_CONTROL = "scaffold.server_control"
#: The ``context.state`` record of a node's own SCAFFOLD variate ``c_i``.
CLIENT_CONTROL_RECORD = "lightning_fl.scaffold/client_control"


class DeclaredSums:
    """The sum-states the algorithms declare, in declaration order (the same on the server and every client, as both
    build the same algorithms from the same YAML).

    Args:
        allocate: ``allocate(name, numel, dtype) -> tensor``: the runtime's own allocation (the server's reducer),
            or ``None`` for plain zero tensors (a client).

    Example:
        >>> client, server = DeclaredSums(), DeclaredSums()
        >>> client.add_state("drift", 2, torch.float32).add_(torch.tensor([1.0, 2.0]))
        tensor([1., 2.])
        >>> total = server.add_state("drift", 2, torch.float32)
        >>> shares, nbytes = server.decode(client.encode(round_idx=0, client_id=1))
        >>> server.add(shares); server.add(shares); total.tolist(), nbytes
        ([2.0, 4.0], 14)
    """

    def __init__(self, allocate: Callable[[str, int, torch.dtype], torch.Tensor] | None = None) -> None:
        self._allocate = allocate
        self.states: dict[str, torch.Tensor] = {}
        self._wire: WireTensors | None = None

    def add_state(self, name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """What ``FederatedContext.add_sum_state`` calls."""
        state = self._allocate(name, numel, dtype) if self._allocate else torch.zeros(numel, dtype=dtype)
        self.states[name] = state
        return state

    @property
    def wire(self) -> WireTensors:
        """The sums as raw payloads (built once the algorithms declared them)."""
        if self._wire is None:
            names = [f"sum/{name}" for name in self.states]
            self._wire = WireTensors(names, list(self.states.values()), [Identity()] * len(names), "uplink")
        return self._wire

    def zero(self) -> None:
        """Zero every sum (a client, before its turn)."""
        for state in self.states.values():
            state.zero_()

    def encode(self, round_idx: int, client_id: int) -> ArrayRecord:
        """This client's shares of the sums, as payloads."""
        record, _ = encode_record(self.wire, list(self.states.values()), seed=0, round_idx=round_idx,
                                  client_id=client_id)
        return record

    def decode(self, record: object) -> tuple[list[torch.Tensor], int]:
        """A client's shares, decoded untrusted (raises :class:`~lightning_fl.exceptions.PayloadError`), and their
        payload bytes."""
        return decode_record(self.wire, record)

    @torch.no_grad()
    def add(self, shares: list[torch.Tensor]) -> None:
        """Add an accepted client's shares into the sums."""
        for state, share in zip(self.states.values(), shares, strict=True):
            state.add_(share.to(state))


class ScaffoldVariates:
    """SCAFFOLD's variates around a Flower round: ``c`` down with the model, ``c_i`` kept in the node's state.

    Args:
        algorithms: The run's algorithms (nothing is done without a :class:`Scaffold` among them).
    """

    def __init__(self, algorithms: list[FederatedAlgorithm]) -> None:
        found = [a for a in algorithms if isinstance(a, Scaffold)]
        self.scaffold = found[0] if found else None
        self._wire: WireTensors | None = None

    @property
    def wire(self) -> WireTensors:
        """The server variate as a raw payload."""
        assert self.scaffold is not None and self.scaffold.server_control is not None
        if self._wire is None:
            control = self.scaffold.server_control
            self._wire = WireTensors([SERVER_CONTROL], [control], [Identity()], "downlink")
        return self._wire

    def encode(self, round_idx: int, client_id: int) -> tuple[ArrayRecord | None, int]:
        """The server's variate for a client (``None`` without SCAFFOLD), and its payload bytes."""
        if self.scaffold is None:
            return None, 0
        assert self.scaffold.server_control is not None
        return encode_record(self.wire, [self.scaffold.server_control], seed=0, round_idx=round_idx,
                             client_id=client_id)

    @torch.no_grad()
    def receive(self, record: object, node_state: RecordDict, client_id: int) -> None:
        """A client: take the server's variate, and load the node's own ``c_i`` (none in its first round)."""
        if self.scaffold is None:
            return
        (control,), _ = decode_record(self.wire, record)
        assert self.scaffold.server_control is not None
        self.scaffold.server_control.copy_(control)
        kept = node_state.array_records.get(CLIENT_CONTROL_RECORD)
        own = {client_id: torch.from_numpy(kept["c"].numpy().copy())} if kept is not None else {}
        self.scaffold.client_controls.load_state_dict(own)

    def keep(self, node_state: RecordDict, client_id: int) -> None:
        """A client, after its update: write its new ``c_i`` into the node's state."""
        if self.scaffold is None:
            return
        own = self.scaffold.client_controls.peek(client_id)
        if own is not None:
            node_state[CLIENT_CONTROL_RECORD] = ArrayRecord(OrderedDict(c=own.detach().cpu().contiguous()))
