"""A test-only ClientApp: the real client, except that one client id crashes every round and another sends hostile
payloads (round 0 oversized, round 1 truncated, round 2 encoded for another shape). Which ids: the run config's
``test-crashing-client`` and ``test-hostile-client``."""

from __future__ import annotations

import torch
from flwr.app import Array, Context, Message
from flwr.clientapp import ClientApp

from lightning_fl.codecs import StochasticQuantizer
from lightning_fl.flower.client import handle_query, handle_train

client_app = ClientApp()

#: The tensor the hostile client corrupts, and its codec in configs/flower_digits.yaml (the first conv's weight).
TARGET = "backbone.0.weight"


def corrupt(reply: Message, round_idx: int) -> None:
    """Replace the target tensor's payload in ``reply`` with a hostile one."""
    record = reply.content.array_records["update"]
    good = record[TARGET]
    if round_idx == 0:  # far over the budget (the tensor's dense bytes and the header)
        data = good.data + bytes(1 << 20)
    elif round_idx == 1:  # cut in half
        data = good.data[: len(good.data) // 2]
    else:  # a valid payload of the same codec, for a tensor of another shape (same number of elements)
        data = StochasticQuantizer(bits=4, deterministic=True).encode(torch.ones(72), 0).to_bytes()
    record[TARGET] = Array(dtype="uint8", shape=(len(data),), stype=good.stype, data=data)


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    client_id = int(context.node_config["partition-id"])
    if client_id == context.run_config["test-crashing-client"]:
        raise RuntimeError(f"client {client_id} crashes in the middle of its round")
    reply = handle_train(msg, context)
    if client_id == context.run_config["test-hostile-client"]:
        corrupt(reply, int(msg.content.config_records["instructions"]["round_idx"]))
    return reply


@client_app.query()
def _query(msg: Message, context: Context) -> Message:
    return handle_query(msg, context)
