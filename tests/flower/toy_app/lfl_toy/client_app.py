"""Toy ClientApp: returns the global array plus ``partition-id + 1``; can stall in one round to be killed there."""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from lfl_toy.wire import decode, encode

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round: decode the global array, mark the round as started, maybe stall, reply with the new array."""
    config = msg.content.config_records["config"]
    round_idx = int(str(config["round"]))
    size = int(str(config["size"]))
    partition = int(context.node_config["partition-id"])
    marker_dir = str(context.run_config.get("marker-dir", ""))
    if marker_dir:
        Path(marker_dir, f"round-{round_idx}-partition-{partition}").touch()
    if int(context.node_config.get("stall-round", -1)) == round_idx:
        time.sleep(float(context.node_config.get("stall-seconds", 60.0)))
    weights = decode(msg.content.array_records["global"]["w"], size)
    update = ArrayRecord({"w": encode(weights + (partition + 1))})
    reply = RecordDict({"update": update, "metrics": MetricRecord({"partition": partition})})
    return Message(content=reply, reply_to=msg)
