"""What the server reports of each round: to stdout, and as one JSON line per round to the run's metrics file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["RoundLog", "RoundReport"]


@dataclass
class RoundReport:
    """One round as the server saw it.

    Attributes:
        round: The round (0-based).
        clients: The client ids sampled (the same as ``lightning-fl fit`` samples).
        accepted: Updates aggregated.
        failed: Sampled clients that did not reply before the round timeout, replied with an error, or have no node.
        rejected: Replies refused: malformed, a payload ``decode_untrusted`` refused, or a non-finite update.
        failed_clients: The client id of every failed client.
        rejected_clients: The client id of every rejected reply.
        rejected_nodes: The node id of every rejected reply (aligned with ``rejected_clients``).
        downlink_bytes: The codecs' payload bytes sent (headers included), as ``lightning-fl fit`` counts them.
        uplink_bytes: The codecs' payload bytes of the accepted updates.
        downlink_message_bytes: Bytes of the payload ``Array``s sent (payloads and their 4-byte length prefixes).
        uplink_message_bytes: Bytes of the payload ``Array``s received in every reply, rejected ones included.
        downlink_wire_bytes: Serialized size of every message content sent (Flower's protobuf of the records: the
            arrays with their stype tags and shapes, the instructions), the message-level count.
        uplink_wire_bytes: Serialized size of every reply's content received, rejected ones included.
        algorithm_downlink_bytes: Payload bytes of algorithm state sent (SCAFFOLD's server variate), which
            ``lightning-fl fit`` does not count.
        algorithm_uplink_bytes: Payload bytes of the accepted clients' shares of algorithm sums (SCAFFOLD's variate
            changes), which ``lightning-fl fit`` does not count.
        dense_bytes: Bytes of one dense float32 model, for comparison.
        refused_step: Whether the server step was refused (a non-finite aggregate or global model).
        val_acc: Accuracy of the new global model on the data module's validation split (``None`` without one).
        seconds: Wall time of the round.
    """

    round: int
    clients: list[int] = field(default_factory=list)
    accepted: int = 0
    failed: int = 0
    rejected: int = 0
    failed_clients: list[int] = field(default_factory=list)
    rejected_clients: list[int] = field(default_factory=list)
    rejected_nodes: list[int] = field(default_factory=list)
    downlink_bytes: int = 0
    uplink_bytes: int = 0
    downlink_message_bytes: int = 0
    uplink_message_bytes: int = 0
    downlink_wire_bytes: int = 0
    uplink_wire_bytes: int = 0
    algorithm_downlink_bytes: int = 0
    algorithm_uplink_bytes: int = 0
    dense_bytes: int = 0
    refused_step: bool = False
    val_acc: float | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the server's log."""
        acc = "n/a" if self.val_acc is None else f"{self.val_acc:.4f}"
        return (f"round {self.round}: {self.accepted}/{len(self.clients)} updates, failed {self.failed}, rejected "
                f"{self.rejected}, uplink {self.uplink_bytes} B, downlink {self.downlink_bytes} B, val_acc {acc}, "
                f"{self.seconds:.2f} s")


class RoundLog:
    """Prints every round's summary and appends its JSON line to ``path`` (when given).

    Example:
        >>> RoundLog(None).write(RoundReport(round=0))
        [lightning-fl] round 0: 0/0 updates, failed 0, rejected 0, uplink 0 B, downlink 0 B, val_acc n/a, 0.00 s
    """

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.reports: list[RoundReport] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def write(self, report: RoundReport) -> None:
        """Record one round."""
        self.reports.append(report)
        print(f"[lightning-fl] {report.summary()}", flush=True)
        if self.path is not None:
            with self.path.open("a") as out:
                out.write(json.dumps(asdict(report)) + "\n")
