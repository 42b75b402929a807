"""What the server tells a client besides the model: the round, the client's id, the seeds and the codecs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TypeVar

from flwr.app import ConfigRecord

from lightning_fl.exceptions import FederatedRuntimeError

__all__ = ["RoundInstructions"]

T = TypeVar("T")


@dataclass(frozen=True)
class RoundInstructions:
    """The ``ConfigRecord`` that travels next to the global model.

    Attributes:
        round_idx: The round (0-based, as Lightning's epochs).
        client_id: The client the server sampled (the node's ``partition-id``).
        seed: The federated seed (payload seeds and the client's training seed derive from it).
        client_seed: The seed of the client's training randomness, ``derive_seed(seed, "client", round, client)``.
        downlink: The name of the downlink codec.
        uplink: The name of the uplink codec.

    Example:
        >>> sent = RoundInstructions(2, 1, 0, 77, "Identity", "TopK")
        >>> RoundInstructions.from_record(sent.to_record()) == sent
        True
    """

    round_idx: int
    client_id: int
    seed: int
    client_seed: int
    downlink: str
    uplink: str

    def to_record(self) -> ConfigRecord:
        """The instructions as a Flower ``ConfigRecord``."""
        return ConfigRecord(dict(asdict(self)))

    @classmethod
    def from_record(cls, record: object) -> RoundInstructions:
        """Read what :meth:`to_record` wrote.

        Raises:
            FederatedRuntimeError: If a field is missing or of the wrong type.
        """
        if not isinstance(record, ConfigRecord):
            raise FederatedRuntimeError(f"the round's instructions must be a ConfigRecord, got {type(record).__name__}")
        round_idx, client_id, seed, client_seed = (_field(record, name, int)
                                                   for name in ("round_idx", "client_id", "seed", "client_seed"))
        downlink, uplink = (_field(record, name, str) for name in ("downlink", "uplink"))
        return cls(round_idx, client_id, seed, client_seed, downlink, uplink)


def _field(record: ConfigRecord, name: str, kind: type[T]) -> T:
    """One field of the instructions, of type ``kind``."""
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FederatedRuntimeError(f"instruction {name!r} must be a {kind.__name__}, got {value!r}")
    return value
