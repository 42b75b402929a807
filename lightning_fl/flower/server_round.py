"""The server side of one round: sample, send the global model, decode the replies untrusted, aggregate, step.

Every piece is the simulation's own: the data module's plan samples the clients (and orders them, so updates are
summed in the order ``lightning-fl fit`` sums them), the links' codecs encode with the same seeds, the config's
aggregator and :class:`~lightning_fl.federation.reduce.RoundReducer` sum the updates and integer-buffer increments,
and :class:`~lightning_fl.federation.guards.GuardedServerStep` steps the server optimizer.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Iterable

import numpy as np
import pytorch_lightning as pl
import torch
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from lightning_fl.exceptions import PayloadError
from lightning_fl.federation.context import RoundContext
from lightning_fl.federation.flat import FlatState
from lightning_fl.federation.guards import GuardedServerStep
from lightning_fl.federation.reduce import RoundReducer
from lightning_fl.flower.algorithms import ServerAlgorithms
from lightning_fl.flower.instructions import RoundInstructions
from lightning_fl.flower.model_wire import ModelWire
from lightning_fl.flower.payloads import content_bytes, decode_record, encode_record, record_bytes
from lightning_fl.flower.round_report import RoundReport
from lightning_fl.flower.run_setup import RunSetup
from lightning_fl.seeding import derive_seed

__all__ = ["MAX_NUM_SAMPLES", "ServerRuntime", "check_num_samples"]

log = logging.getLogger("lightning_fl.flower")

#: The largest sample count a client may report (its weight must be exact in float64).
MAX_NUM_SAMPLES = 2**53
#: The largest increment of an integer buffer a client may send (summing many must not overflow int64).
MAX_INT_INCREMENT = 2**40


def check_num_samples(value: object) -> int:
    """A client's reported sample count, which weighs its update: a positive int.

    Raises:
        PayloadError: Otherwise.

    Example:
        >>> check_num_samples(12)
        12
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NUM_SAMPLES:
        raise PayloadError(f"num-samples must be an int in [1, 2**53], got {value!r}")
    return value


class ServerRuntime:
    """The global model and everything that steps it, for one Flower run.

    Args:
        setup: The run's pieces from the YAML.
    """

    def __init__(self, setup: RunSetup) -> None:
        self.setup = setup
        device = torch.device("cpu")
        self.state = state = FlatState(setup.model, device)
        self.wire = ModelWire(state, setup.averaging)
        self.aggregator = setup.averaging.aggregator
        self.aggregator.bind(state.numel, device, dtype=state.dtype)
        self.reducer = RoundReducer()
        self.reducer.bind(self.aggregator, state.int_numel, device)
        self.guard = GuardedServerStep(state, setup.averaging.server_optimizer)
        self.algorithms = ServerAlgorithms(setup.algorithms, state, setup.datamodule, setup.averaging, setup.seed,
                                           allocate=self.reducer.add_state)
        #: The server's Trainer: evaluates the global model, and is what algorithms' ``on_round_end`` receive.
        self.trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                  enable_model_summary=False, devices=1,
                                  accelerator=setup.client_trainer.get("accelerator", "auto"))
        self._update, self._update_views = state.new_flat()

    def run_round(self, grid: Grid, nodes: dict[int, int], round_idx: int, timeout: float) -> RoundReport:
        """Run round ``round_idx`` with the clients' nodes (``{client_id: node_id}``) and step the global model."""
        began = time.perf_counter()
        self.aggregator.reset()
        self.reducer.reset()
        plan = self.setup.datamodule.plan_round(round_idx)
        report = RoundReport(round=round_idx, clients=[int(c) for c in plan.clients], dense_bytes=self.wire.dense_bytes)
        messages = self._messages(plan.rank_clients, nodes, round_idx, report)
        replies = {reply.metadata.src_node_id: reply for reply in grid.send_and_receive(messages, timeout=timeout)}
        for client_id in plan.rank_clients:  # the order lightning-fl fit sums the clients in
            node = nodes.get(client_id)
            reply = replies.get(node) if node is not None else None
            if reply is None or reply.has_error():
                report.failed += 1
                report.failed_clients.append(client_id)
                reason = "no reply" if reply is None else reply.error.reason
                log.warning("round %d: client %d (node %s) failed: %s", round_idx, client_id, node, reason)
                continue
            self._receive(reply, round_idx, client_id, report)
        report.refused_step = self._step(round_idx, plan.clients, report)
        report.seconds = time.perf_counter() - began
        return report

    def _messages(self, clients: Iterable[int], nodes: dict[int, int], round_idx: int,
                  report: RoundReport) -> list[Message]:
        """The global model, encoded for each sampled client that has a node."""
        averaging, seed, state = self.setup.averaging, self.setup.seed, self.state
        messages = []
        for client_id in clients:
            if client_id not in nodes:
                continue
            record, nbytes = encode_record(self.wire.downlink, [*state.views, *state.int_views], seed=seed,
                                           round_idx=round_idx, client_id=client_id)
            report.downlink_bytes += nbytes
            report.downlink_message_bytes += record_bytes(record)
            client_seed = derive_seed(seed, "client", round_idx, client_id)
            instructions = RoundInstructions(round_idx, client_id, seed, client_seed, averaging.downlink.codec.name,
                                             averaging.uplink.codec.name)
            content = RecordDict({"model": record, "instructions": instructions.to_record()})
            algorithm_record, algorithm_bytes = self.algorithms.down(round_idx, client_id)
            if algorithm_record is not None:
                content["algorithm"] = algorithm_record
                report.algorithm_downlink_bytes += algorithm_bytes
            report.downlink_wire_bytes += content_bytes(content)
            messages.append(Message(content, dst_node_id=nodes[client_id], message_type="train",
                                    group_id=str(round_idx)))
        return messages

    @torch.no_grad()
    def _receive(self, reply: Message, round_idx: int, client_id: int, report: RoundReport) -> None:
        """Decode one reply untrusted and add it to the round's sums, or count it as rejected."""
        content = reply.content
        report.uplink_wire_bytes += content_bytes(content)
        record = content.array_records.get("update")
        if record is not None:
            report.uplink_message_bytes += record_bytes(record)
        try:
            metrics = content.metric_records.get("metrics")
            weight = int(self.setup.datamodule.client_sizes[client_id])  # the server's own count, as in simulation
            claimed = check_num_samples(metrics.get("num-samples") if metrics is not None else None)
            if claimed != weight:  # a client may not outweigh the others, and one with other data is refused
                raise PayloadError(f"num-samples must be client {client_id}'s {weight} samples, got {claimed}")
            tensors, nbytes = decode_record(self.wire.uplink, record)
            shares, share_bytes = self.algorithms.decode_sums(content.array_records.get("sums"))
            n = self.wire.num_float
            torch._foreach_copy_(self._update_views, tensors[:n])
            if not all(bool(torch.isfinite(t.sum())) for t in (self._update, *shares)):
                raise PayloadError("the update or the algorithms' sums are not finite (NaN or Inf)")
            if any(t.numel() and int(t.abs().max()) > MAX_INT_INCREMENT for t in tensors[n:]):
                raise PayloadError(f"an integer buffer's increment exceeds {MAX_INT_INCREMENT} (BatchNorm counters "
                                   "grow by the client's steps)")
        except Exception as err:  # whatever a hostile payload triggers, the server drops it and goes on
            report.rejected += 1
            report.rejected_clients.append(client_id)
            report.rejected_nodes.append(reply.metadata.src_node_id)
            log.warning("round %d: update of client %d from node %d rejected: %s: %s", round_idx, client_id,
                        reply.metadata.src_node_id, type(err).__name__, err)
            return
        report.accepted += 1
        report.uplink_bytes += nbytes
        self.aggregator.update(self._update, float(weight))
        if self.state.int_specs:
            self.reducer.add_int_increments(torch.cat([t.reshape(-1) for t in tensors[n:]]).to(torch.float64))
        self.algorithms.sums.add(shares)
        report.algorithm_uplink_bytes += share_bytes

    def _step(self, round_idx: int, clients: np.ndarray, report: RoundReport) -> bool:
        """Reduce the round's sums, step the global model and call the algorithms, as ``ServerStep`` does; returns
        whether the guard refused the step."""
        senders = report.accepted + report.rejected
        int_increments, _ = self.reducer.reduce((report.downlink_bytes, report.uplink_bytes, report.rejected,
                                                 senders))
        context = RoundContext(round_idx, clients, self.aggregator.count, round_idx == self.setup.num_rounds - 1,
                               report.downlink_bytes, report.uplink_bytes, senders, report.rejected)
        self.algorithms.synced(context, self.aggregator)
        refused = self._apply(round_idx, int_increments)
        self.state.write_module()
        self.algorithms.round_end(self.trainer, dataclasses.replace(context, refused=refused))
        return refused

    def _apply(self, round_idx: int, int_increments: torch.Tensor) -> bool:
        """The guarded server step on the round's mean update; returns whether the guard refused it."""
        if self.aggregator.count == 0:
            warnings.warn(f"no client update reached the server in round {round_idx}; the global model is unchanged",
                          RuntimeWarning, stacklevel=3)
            return False
        dm, averaging = self.setup.datamodule, self.setup.averaging
        denominator = float(dm.client_sizes.sum()) if averaging.aggregation == "all" else None
        increments = int_increments.round().to(torch.int64)
        reason = self.guard.step(self.aggregator.compute(denominator), increments)
        if reason is not None:
            self.guard.warn_refused(round_idx, reason)
        return reason is not None
