"""The client side: train one round with a Lightning Trainer from the global model the downlink delivered.

A client does exactly what ``lightning-fl fit`` does for it inside the simulated round (see
:class:`~lightning_fl.federation.client_step.ClientSteps`): start from the decoded global model, seed its randomness
from ``derive_seed(seed, "client", round_idx, client_id)`` at its first batch, run its planned batches
(:func:`~lightning_fl.datamodules.plan.client_batches`: the same shuffles) with a fresh optimizer state, and send
``w_client - w_received`` through the uplink codec, with its own codec state kept in ``context.state``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from typing_extensions import override

from lightning_fl.datamodules.loaders import BatchLoader, make_batch_loader
from lightning_fl.datamodules.plan import PlanRequest, client_batches
from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError
from lightning_fl.federation.client_seed import seed_client
from lightning_fl.federation.flat import FlatState
from lightning_fl.flower.algorithms import ClientAlgorithms
from lightning_fl.flower.instructions import RoundInstructions
from lightning_fl.flower.model_wire import ModelWire
from lightning_fl.flower.node_state import load_codec_state, save_codec_state
from lightning_fl.flower.payloads import decode_record, encode_record
from lightning_fl.flower.run_config import read_run_config
from lightning_fl.flower.run_setup import RunSetup, load_run_setup
from lightning_fl.namespaces import Callback

__all__ = ["ClientRuntime", "handle_query", "handle_train", "partition_id"]

#: This process's client runtimes, by YAML (path and modification time).
_RUNTIMES: dict[tuple[str, int], ClientRuntime] = {}


class FlowerClientRound(Callback):
    """Drives a client's round on Flower (the client's Trainer's round driver): seeds the client's randomness at its
    first batch, where ``lightning-fl fit`` seeds it.

    Args:
        seed: The client's seed, ``derive_seed(seed, "client", round_idx, client_id)``.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def plan_request(self) -> PlanRequest:
        """A client trains its own planned batches: nothing to ask of a round plan."""
        return PlanRequest()

    @override
    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == 0:
            seed_client(self.seed, pl_module.device)


class ClientRuntime:
    """One config's model, data and codecs on a client process (built once, reused by every round).

    Args:
        setup: The run's pieces from the YAML.
    """

    def __init__(self, setup: RunSetup) -> None:
        self.setup = setup
        self.state = FlatState(setup.model, torch.device("cpu"))
        self.wire = ModelWire(self.state, setup.averaging)
        self._start, self._start_views = self.state.new_flat()
        self._delta, self._delta_views = self.state.new_flat()
        self.algorithms = ClientAlgorithms(setup.algorithms, self.state, setup.datamodule, setup.averaging, setup.seed)

    def train(self, instructions: RoundInstructions, content: RecordDict, node_state: RecordDict) -> RecordDict:
        """Run the client's round from the server's message ``content`` and return its reply: the update's
        payloads, its sample count, and its shares of the algorithms' sums."""
        self._check(instructions)
        self._load_start(content.array_records.get("model"))
        dm, client_id = self.setup.datamodule, instructions.client_id
        batches = client_batches(dm.client_indices[client_id], dm.batch_size, dm.local_epochs, dm.shuffle, dm.seed,
                                 instructions.round_idx, client_id, dm.drop_last)
        num_samples = len(dm.client_indices[client_id])
        self.algorithms.start(instructions.round_idx, client_id, num_samples, len(batches), self._start_views,
                              content.array_records.get("algorithm"), node_state)
        self._fit(batches, instructions.client_seed)
        update, sums = self._update(node_state)
        codec = self.setup.averaging.uplink.codec
        load_codec_state(codec, node_state, "uplink")
        record, _ = encode_record(self.wire.uplink, update, seed=instructions.seed,
                                  round_idx=instructions.round_idx, client_id=client_id)
        save_codec_state(codec, node_state, "uplink")
        reply = RecordDict({"update": record, "metrics": MetricRecord({"num-samples": num_samples})})
        if sums is not None:
            reply["sums"] = sums
        return reply

    def _fit(self, batches: list[np.ndarray], client_seed: int) -> None:
        """Train the module on ``batches`` with a fresh Lightning Trainer (so a fresh optimizer state, as
        ``lightning-fl fit`` clears it for every client), the algorithms among its callbacks."""
        dm = self.setup.datamodule
        assert dm.train_dataset is not None
        loader = BatchLoader(make_batch_loader(dm.train_dataset, batches, dm.num_workers, dm.pin_memory,
                                               dm.collate_fn))
        callbacks = [FlowerClientRound(client_seed), *self.algorithms.algorithms]
        trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, devices=1,
                             callbacks=callbacks, **self.setup.client_trainer)
        trainer.fit(self.setup.model, train_dataloaders=loader)

    def _check(self, instructions: RoundInstructions) -> None:
        """Refuse instructions from a server whose config differs from this client's."""
        averaging = self.setup.averaging
        mine = (self.setup.seed, averaging.downlink.codec.name, averaging.uplink.codec.name)
        theirs = (instructions.seed, instructions.downlink, instructions.uplink)
        if mine != theirs:
            raise FederatedConfigError(f"the server's (seed, downlink, uplink) {theirs} differ from this client's "
                                       f"{mine} in {self.setup.config}: both sides must use the same config")

    @torch.no_grad()
    def _load_start(self, model: object) -> None:
        """Decode the global model and write it into the module (the client's starting weights)."""
        tensors, _ = decode_record(self.wire.downlink, model)
        state, n = self.state, self.wire.num_float
        torch._foreach_copy_(self._start_views, tensors[:n])
        for view, tensor in zip(state.int_views, tensors[n:], strict=True):
            view.copy_(tensor)
        state.write_module(self._start_views)

    @torch.no_grad()
    def _update(self, node_state: RecordDict) -> tuple[list[torch.Tensor], ArrayRecord | None]:
        """``w_client - w_received`` per floating tensor (after the algorithms' changes), then the integer buffers'
        increments; and the client's shares of the algorithms' sums."""
        state = self.state
        state.module_minus(self._start_views, self._delta_views)
        if not bool(torch.isfinite(self._delta.sum())):
            self.algorithms.finish(None, node_state)
            raise FederatedRuntimeError("the client's update is not finite (NaN or Inf); it is not sent")
        sums = self.algorithms.finish((self._delta, self._delta_views), node_state)
        increments = state.module_int_minus_global()
        ints = [increments[s.offset: s.offset + s.numel].view(s.shape) for s in state.int_specs]
        return [*self._delta_views, *ints], sums


def partition_id(context: Context, num_clients: int) -> int:
    """The client id of this node: ``context.node_config["partition-id"]``, checked against the config.

    Raises:
        FederatedConfigError: If it is missing or not an int in ``[0, num_clients)``.
    """
    value = context.node_config.get("partition-id")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_clients:
        raise FederatedConfigError(f"node_config 'partition-id' must be a client id in [0, {num_clients - 1}] (the "
                                   f"config has {num_clients} clients), got {value!r}")
    return value


def client_runtime(context: Context) -> ClientRuntime:
    """This process's runtime for the run config's YAML (built on first use, and again when the file changed)."""
    settings = read_run_config(context.run_config)
    path = Path(settings.config)
    key = (str(path.resolve()), path.stat().st_mtime_ns) if path.is_file() else (settings.config, 0)
    runtime = _RUNTIMES.get(key)
    if runtime is None:
        runtime = _RUNTIMES[key] = ClientRuntime(load_run_setup(settings.config, settings.num_rounds))
    return runtime


def handle_train(msg: Message, context: Context) -> Message:
    """The ClientApp's ``train``: one round of this node's client."""
    runtime = client_runtime(context)
    instructions = RoundInstructions.from_record(msg.content.config_records.get("instructions"))
    client_id = partition_id(context, runtime.setup.datamodule.num_clients)
    if instructions.client_id != client_id:
        raise FederatedRuntimeError(f"the server sent client {instructions.client_id}'s round to the node of "
                                    f"partition-id {client_id}")
    reply = runtime.train(instructions, msg.content, context.state)
    return Message(reply, reply_to=msg)


def handle_query(msg: Message, context: Context) -> Message:
    """The ClientApp's ``query``: this node's client id, so the server can address its clients."""
    runtime = client_runtime(context)
    client_id = partition_id(context, runtime.setup.datamodule.num_clients)
    return Message(RecordDict({"client": MetricRecord({"partition-id": client_id})}), reply_to=msg)
