"""The deployment harness on the toy app: a real SuperLink and SuperNodes on localhost, TLS and node auth on.

Each test starts Flower processes (a SuperLink, SuperNodes, and the SuperExec, ServerApp and ClientApp processes
they start) and tears them down, also on failure.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from flower_processes import tagged_pids
from harness import FlowerDeployment, read_json_lines

pytestmark = pytest.mark.distributed

TOY_APP = Path(__file__).parent / "toy_app"
ARRAY_SIZE = 16
# Flower's per-message framing for the toy's content (object headers, the RecordDict/ArrayRecord/Array/ArrayChunk
# objects, the round/size config): measured 671 bytes downlink and 664 uplink beside its 64 payload bytes.
FRAMING_BYTES = 1024


def test_three_rounds_with_tls_and_node_auth(tmp_path: Path) -> None:
    started = time.monotonic()
    metrics = tmp_path / "metrics.jsonl"
    with FlowerDeployment(tmp_path, TOY_APP) as deployment:
        node_ids = deployment.start([{"partition-id": 0}, {"partition-id": 1}])
        run_id = deployment.start_run({"num-rounds": 3, "metrics-file": str(metrics), "array-size": ARRAY_SIZE})
        deployment.wait_for_lines(metrics, 3, timeout=90)
        assert deployment.wait_for_run(run_id, timeout=30) == "finished:completed"
        superlink_log = deployment.logs()["superlink"]
    assert not [pid for process in deployment.processes() for pid in tagged_pids(process.tag)]  # all torn down
    lines = read_json_lines(metrics)
    assert [line["round"] for line in lines] == [0, 1, 2]
    assert all(line["replies"] == 2 and line["failed"] == 0 for line in lines)
    # Each round every client sends back global + (partition-id + 1): the mean moves by 1.5 a round.
    assert [line["mean"] for line in lines] == pytest.approx([1.5, 3.0, 4.5])
    for line in lines:
        assert line["payload_uplink_bytes"] == 2 * 4 * ARRAY_SIZE
        for side in ("uplink", "downlink"):
            payload = line[f"payload_{side}_bytes"]
            assert payload < line[f"{side}_bytes"] <= payload + 2 * FRAMING_BYTES
    assert "Uvicorn running on https://127.0.0.1" in superlink_log  # TLS on the one port of the SuperLink
    for node_id in node_ids:  # both authenticated nodes took part
        assert f"Push replies from node_id={node_id}" in superlink_log
    print(f"3 rounds, 2 SuperNodes, TLS + auth: {time.monotonic() - started:.1f} s")


def test_unregistered_supernode_is_refused(tmp_path: Path) -> None:
    started = time.monotonic()
    with FlowerDeployment(tmp_path, TOY_APP) as deployment:
        deployment.start_superlink()
        registered = deployment.new_node_key()
        deployment.register_supernode(registered)
        stranger = deployment.new_node_key()  # a valid key pair the SuperLink was never told about
        supernode = deployment.start_supernode({"partition-id": 0}, stranger)
        supernode.popen.wait(timeout=60)
        superlink_log = deployment.logs()["superlink"]
    assert supernode.popen.returncode != 0
    assert "Failed to activate SuperNode" in supernode.log()
    assert "No SuperNode found with the given public key" in superlink_log
    assert '"POST /v1/fleet/activate-node HTTP/1.1" 412' in superlink_log
    print(f"unregistered SuperNode refused: {time.monotonic() - started:.1f} s")


def test_killed_supernode_counts_as_failed_and_the_round_completes(tmp_path: Path) -> None:
    started = time.monotonic()
    metrics, markers = tmp_path / "metrics.jsonl", tmp_path / "markers"
    markers.mkdir()
    with FlowerDeployment(tmp_path, TOY_APP) as deployment:
        deployment.start([{"partition-id": 0}, {"partition-id": 1, "stall-round": 1, "stall-seconds": 5.0}])
        run_config = {"num-rounds": 2, "round-timeout": 15.0, "metrics-file": str(metrics), "marker-dir": str(markers)}
        run_id = deployment.start_run(run_config)
        deployment.wait_for_file(markers / "round-1-partition-1", timeout=90)  # node 1 is inside round 1
        deployment.kill_supernode(1)
        assert not tagged_pids(deployment.supernodes[1].tag)  # the SuperNode, its SuperExec and its ClientApp
        deployment.wait_for_lines(metrics, 2, timeout=60)
        assert deployment.wait_for_run(run_id, timeout=30) == "finished:completed"
    first, second = read_json_lines(metrics)
    assert (first["replies"], first["failed"], first["mean"]) == (2, 0, pytest.approx(1.5))
    # Round 1 ends at its timeout with the surviving client only: 1.5 + (0 + 1). Had node 1 not been killed, its
    # reply after the 5 s stall would have made the round's timeout and the count 2 replies, 0 failed.
    assert (second["sent"], second["replies"], second["failed"], second["mean"]) == (2, 1, 1, pytest.approx(2.5))
    assert second["uplink_bytes"] < first["uplink_bytes"]
    print(f"kill one SuperNode mid-round: {time.monotonic() - started:.1f} s")
