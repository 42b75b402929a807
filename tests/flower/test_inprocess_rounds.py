"""The apps' server and client code paths through an in-process Grid (no Ray): a client that never replies before
the round timeout fails and the round completes with the others; a hostile payload is refused without allocating
anything near the size it claims."""

from __future__ import annotations

import json
import resource
import tracemalloc
from pathlib import Path

import pytest
import torch
from flwr.app import Array, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from lightning_fl.codecs.base import Payload, pack_tensor_meta
from lightning_fl.exceptions import PayloadError
from lightning_fl.flower.apps import client_app
from lightning_fl.flower.payloads import decode_record, encode_record
from lightning_fl.flower.run_setup import load_run_setup
from lightning_fl.flower.server import run_server
from lightning_fl.flower.server_round import ServerRuntime

try:  # tests/flower on sys.path (pytest's rootdir-prepend import mode)
    from inprocess_grid import FIRST_NODE_ID, InProcessGrid
except ImportError:  # pragma: no cover - tests as a package
    from .inprocess_grid import FIRST_NODE_ID, InProcessGrid

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "flower_digits.yaml")


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Flower's runtimes set before an app runs (messages read their run id from it)."""
    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1 if name != "_node_id" else 0)


def test_a_client_that_does_not_reply_before_the_timeout_fails_and_the_round_completes(tmp_path: Path) -> None:
    silent_client = 0
    run_config = {"config": CONFIG, "num-rounds": 2, "round-timeout": 7.5, "connect-timeout": 5.0,
                  "metrics-file": str(tmp_path / "rounds.jsonl")}
    grid = InProcessGrid(client_app, run_config, num_nodes=4, silent=[FIRST_NODE_ID + silent_client])
    reports = run_server(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                       run_config=run_config))
    assert [r.round for r in reports] == [0, 1]
    for report in reports:
        assert silent_client in report.clients  # sampled in both rounds of this config
        assert report.failed_clients == [silent_client] and report.rejected == 0
        assert report.accepted == len(report.clients) - 1
    assert (FIRST_NODE_ID + silent_client, "train") in grid.delivered  # it had its node: it got the round, then died
    assert grid.timeouts[-2:] == [7.5, 7.5]  # the rounds waited for the run config's round-timeout
    lines = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert [line["failed"] for line in lines] == [1, 1]


def _update_record(runtime: ServerRuntime) -> RecordDict:
    """A well-formed update (zeros) as a client would send it."""
    zeros = [torch.zeros_like(t) for t in [*runtime.state.views, *runtime.state.int_views]]
    record, _ = encode_record(runtime.wire.uplink, zeros, seed=0, round_idx=0, client_id=0)
    return record


def test_hostile_payloads_are_refused_without_allocating_what_they_claim() -> None:
    runtime = ServerRuntime(load_run_setup(CONFIG))
    claimed = 1 << 28  # elements a hostile header claims: 1 GiB as float32
    raw_bias = Payload("Identity", pack_tensor_meta((claimed,), torch.float32), torch.zeros(50, dtype=torch.uint8))
    quantized = runtime.wire.uplink.slots[0]
    assert quantized.name == "backbone.0.weight" and quantized.codec.name.startswith("StochasticQuantizer")
    hostile = {
        "backbone.0.bias": raw_bias.to_bytes(),  # a 50-byte body claiming 2**28 elements
        "backbone.4.weight": bytes(64 << 20),  # 64 MiB: far over the budget
        "backbone.9.weight": b"\x08\x00\x00\x00\x01",  # truncated: a header length it does not hold
    }
    dense = runtime.wire.dense_bytes
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        for name, data in hostile.items():
            record = _update_record(runtime)
            record[name] = Array(dtype="uint8", shape=(len(data),), stype=record[name].stype, data=data)
            tracemalloc.reset_peak()
            with pytest.raises(PayloadError):
                decode_record(runtime.wire.uplink, record)
            peak = tracemalloc.get_traced_memory()[1]
            print(f"{name}: {peak} bytes traced at peak while refusing a {len(data)}-byte payload")
            assert peak < 4 * dense, f"{name}: decoding a refused payload traced {peak} bytes (model: {dense})"
    finally:
        tracemalloc.stop()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 32 * 1024, f"the process's peak memory grew by {grown_kib} KiB"


def test_a_dense_float_array_is_refused_where_a_payload_must_travel() -> None:
    runtime = ServerRuntime(load_run_setup(CONFIG))
    record = _update_record(runtime)
    record["backbone.9.weight"] = Array(torch.zeros(10, 64))  # what Flower's own examples send
    with pytest.raises(PayloadError, match=r"must travel as a uint8 Array of stype 'lightning_fl\.payload/"):
        decode_record(runtime.wire.uplink, record)


def test_a_second_node_claiming_a_taken_partition_id_is_left_out_and_the_run_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    run_config = {"config": CONFIG, "num-rounds": 1, "connect-timeout": 2.0}
    grid = InProcessGrid(client_app, run_config, num_nodes=4)
    grid.contexts[FIRST_NODE_ID + 1].node_config["partition-id"] = 0
    with caplog.at_level("WARNING"):
        (report,) = run_server(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                             run_config=run_config))
    assert "nodes 1000 and 1001 both claim partition-id 0" in caplog.text
    assert (FIRST_NODE_ID + 1, "train") not in grid.delivered  # the second claimant trains nothing
    assert report.accepted + report.failed == len(report.clients)
    assert report.failed == int(1 in report.clients)  # client 1 has no node left: it fails when sampled


def test_a_client_claiming_more_samples_than_it_holds_is_rejected_not_weighted(tmp_path: Path) -> None:
    """The server weighs an update by the client's size as it knows it (as lightning-fl fit does), never by the
    client's claim: a client claiming 2**53 samples would otherwise outweigh every other client."""
    inflated = 0  # sampled in both rounds of this config

    def inflating_client(message: Message, context: Context) -> Message:
        reply = client_app(message, context)
        metrics = reply.content.metric_records.get("metrics") if not reply.has_error() else None
        if metrics is not None and int(context.node_config["partition-id"]) == inflated:
            metrics["num-samples"] = 2**53
        return reply

    run_config = {"config": CONFIG, "num-rounds": 1, "round-timeout": 30.0, "connect-timeout": 5.0}
    grid = InProcessGrid(inflating_client, run_config, num_nodes=4)
    (report,) = run_server(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                         run_config=run_config))
    assert inflated in report.clients
    assert report.rejected_clients == [inflated] and report.accepted == len(report.clients) - 1
