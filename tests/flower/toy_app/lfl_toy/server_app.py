"""Toy ServerApp: averages one array over the connected nodes for a few rounds and writes one JSON line per round.

A node whose reply is missing when the round timeout ends, or comes back as an error, counts as failed; the round
completes with the others.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from lfl_toy.wire import content_bytes, decode, encode

app = ServerApp()


def _wait_for_nodes(grid: Grid, min_nodes: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= min_nodes:
            return node_ids
        if time.monotonic() > deadline:
            raise RuntimeError(f"min-nodes={min_nodes} nodes did not connect within {timeout} s, got {len(node_ids)}")
        time.sleep(0.5)


def _send_and_collect(grid: Grid, messages: list[Message], timeout: float, poll: float = 0.25) -> list[Message]:
    """Push ``messages`` and pull their replies until all are in or ``timeout`` seconds have passed.

    ``Grid.send_and_receive`` does the same but pulls every 3 s; polling faster takes seconds off each round.
    """
    pending = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(list(pending)):
            replies.append(reply)
            pending.discard(reply.metadata.reply_to_message_id)
        if pending:
            time.sleep(poll)
    return replies


def _round(grid: Grid, node_ids: list[int], weights: np.ndarray, round_idx: int, timeout: float) -> dict:
    config = ConfigRecord({"round": round_idx, "size": int(weights.size)})
    content = RecordDict({"global": ArrayRecord({"w": encode(weights)}), "config": config})
    started = time.monotonic()
    messages = [Message(content=content, dst_node_id=node_id, message_type=MessageType.TRAIN) for node_id in node_ids]
    replies = [reply for reply in _send_and_collect(grid, messages, timeout) if not reply.has_error()]
    updates = [decode(reply.content.array_records["update"]["w"], weights.size) for reply in replies]
    if updates:
        weights[:] = np.mean(updates, axis=0)
    return {
        "round": round_idx,
        "sent": len(messages),
        "replies": len(replies),
        "failed": len(messages) - len(replies),
        "downlink_bytes": len(messages) * content_bytes(content),
        "uplink_bytes": sum(content_bytes(reply.content) for reply in replies),
        "payload_downlink_bytes": len(messages) * weights.nbytes,
        "payload_uplink_bytes": len(replies) * weights.nbytes,
        "mean": float(weights.mean()),
        "seconds": round(time.monotonic() - started, 2),
    }


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-rounds`` rounds; append each round's counts to ``metrics-file`` as JSON lines."""
    config = context.run_config
    node_ids = _wait_for_nodes(grid, int(config["min-nodes"]), float(config["node-wait-timeout"]))
    weights = np.zeros(int(config["array-size"]), dtype=np.float32)
    metrics_file = str(config.get("metrics-file", ""))
    for round_idx in range(int(config["num-rounds"])):
        line = _round(grid, node_ids, weights, round_idx, float(config["round-timeout"]))
        if metrics_file:
            with Path(metrics_file).open("a", encoding="utf-8") as stream:
                stream.write(json.dumps(line) + "\n")
