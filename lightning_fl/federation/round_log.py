"""The framework's own per-round scalars (the server callback logs them once per round, ``step = round_idx``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoundStats:
    """What one round cost and did, over all ranks.

    Attributes:
        round_idx: The round.
        clients: Client updates aggregated (rejected ones excluded).
        uplink_bytes: Payload bytes clients sent this round.
        downlink_bytes: Payload bytes the server sent this round.
        uplink_bytes_total: Cumulative uplink bytes.
        downlink_bytes_total: Cumulative downlink bytes.
        downlink_dense_bytes: Bytes the round's downlink would take as raw float32 payloads.
        uplink_dense_bytes: Bytes the updates that were sent would take as raw float32 payloads (clients whose
            update was dropped before sending count in neither this nor ``uplink_bytes``).
        rejected_updates: Client updates dropped for containing NaN or Inf.
        rejected_rounds: 1 when the round was refused because its aggregate or the model after the server step held
            NaN or Inf (the global model was kept), else 0.
        round_seconds: Wall time of the round's training and aggregation on this rank.
    """

    round_idx: int
    clients: int
    uplink_bytes: int
    downlink_bytes: int
    uplink_bytes_total: int
    downlink_bytes_total: int
    downlink_dense_bytes: int
    uplink_dense_bytes: int
    rejected_updates: int
    round_seconds: float
    rejected_rounds: int = 0

    def metrics(self) -> dict[str, float]:
        """The ``fl/`` scalars, by their logged names."""
        return {
            "fl/clients": float(self.clients),
            "fl/uplink_bytes": float(self.uplink_bytes),
            "fl/downlink_bytes": float(self.downlink_bytes),
            "fl/uplink_bytes_total": float(self.uplink_bytes_total),
            "fl/downlink_bytes_total": float(self.downlink_bytes_total),
            "fl/uplink_ratio": self.uplink_dense_bytes / self.uplink_bytes if self.uplink_bytes else float("nan"),
            "fl/downlink_ratio": (
                self.downlink_dense_bytes / self.downlink_bytes if self.downlink_bytes else float("nan")
            ),
            "fl/rejected_updates": float(self.rejected_updates),
            "fl/rejected_rounds": float(self.rejected_rounds),
            "fl/round_seconds": self.round_seconds,
        }
