"""lightning-fl on Flower's deployment engine: a SuperLink and two SuperNodes on localhost, TLS and node auth on.

The real apps (``lightning_fl.flower.apps`` through the app project ``examples/flower``) run
``configs/flower_digits.yaml`` with two clients, one per SuperNode (``partition-id`` 0 and 1). The YAML's partitioner
is set to 2 clients and ``clients_per_round`` to 2 (4 clients, 3 per round in the file, would leave sampled clients
without a node); everything else (model, codecs, error feedback, server optimizer, seeds) is the file's.

Measured on an idle 2-core machine: 68 s for the 3 rounds (val_acc 0.696, 0.858, 0.925; uplink message bytes 3344 =
0.206 of two dense models, downlink 5208 = 0.32) and 83 s for the kill test (the killed client's round ends at its
45 s timeout). Each round starts a fresh ClientApp process per node (Flower 1.42 runs one per message), which
imports torch and Lightning and builds the model again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

import yaml
from flower_processes import tagged_pids
from harness import REPO_ROOT, FlowerDeployment, read_json_lines

pytestmark = pytest.mark.distributed

APP = REPO_ROOT / "examples" / "flower"
CONFIG = REPO_ROOT / "configs" / "flower_digits.yaml"
# Beside the codecs' payload bytes, what the message-level count may add per reply or per message sent: the
# payload Arrays' length prefixes (4 bytes per tensor) and the headers of the tensors that travel raw.
FRAMING_BYTES_PER_MESSAGE = 4096


def _two_client_config(tmp_path: Path) -> Path:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config["data"]["partitioner"]["init_args"]["num_clients"] = 2
    config["data"]["clients_per_round"] = 2
    path = tmp_path / "flower_digits_2_clients.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _run_config(tmp_path: Path, num_rounds: int, round_timeout: float) -> dict[str, str | int | float]:
    return {"config": str(_two_client_config(tmp_path)), "num-rounds": num_rounds, "round-timeout": round_timeout,
            "connect-timeout": 60.0, "metrics-file": str(tmp_path / "metrics.jsonl")}


def test_flower_digits_three_rounds_on_the_deployment_engine(tmp_path: Path) -> None:
    started = time.monotonic()
    metrics = tmp_path / "metrics.jsonl"
    with FlowerDeployment(tmp_path, APP) as deployment:
        deployment.start([{"partition-id": 0, "num-partitions": 2}, {"partition-id": 1, "num-partitions": 2}])
        run_id = deployment.start_run(_run_config(tmp_path, num_rounds=3, round_timeout=300.0))
        deployment.wait_for_lines(metrics, 3, timeout=600)
        assert deployment.wait_for_run(run_id, timeout=60) == "finished:completed", deployment.log_tail()
    rounds = read_json_lines(metrics)
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all((r["accepted"], r["failed"], r["rejected"]) == (2, 0, 0) for r in rounds), rounds
    assert rounds[2]["val_acc"] > rounds[0]["val_acc"], [r["val_acc"] for r in rounds]
    for r in rounds:
        # The payload Arrays hold the codecs' bytes plus a 4-byte length per tensor; the serialized messages (Flower's
        # protobuf of the records: stype tags, shapes, keys, the instructions) add framing, and stay far below the
        # dense model.
        assert r["uplink_message_bytes"] <= r["uplink_wire_bytes"] <= r["uplink_bytes"] + 2 * FRAMING_BYTES_PER_MESSAGE
        assert r["downlink_message_bytes"] <= r["downlink_wire_bytes"] <= (r["downlink_bytes"]
                                                                          + 2 * FRAMING_BYTES_PER_MESSAGE)
        assert r["uplink_bytes"] <= r["uplink_message_bytes"]
        assert r["uplink_wire_bytes"] < 0.5 * 2 * r["dense_bytes"]  # 4-bit updates from two clients
        assert r["downlink_wire_bytes"] < 0.75 * 2 * r["dense_bytes"]  # an 8-bit global model to two clients
    print(f"flower_digits, 3 rounds, 2 SuperNodes, TLS + auth: {time.monotonic() - started:.1f} s; "
          f"val_acc {[round(r['val_acc'], 4) for r in rounds]}; uplink/dense "
          f"{rounds[0]['uplink_wire_bytes'] / (2 * rounds[0]['dense_bytes']):.3f}, downlink/dense "
          f"{rounds[0]['downlink_wire_bytes'] / (2 * rounds[0]['dense_bytes']):.3f}; {rounds[0]}")


def test_killing_a_client_process_mid_round_leaves_the_round_to_the_other(tmp_path: Path) -> None:
    started = time.monotonic()
    metrics = tmp_path / "metrics.jsonl"
    with FlowerDeployment(tmp_path, APP) as deployment:
        deployment.start([{"partition-id": 0, "num-partitions": 2}, {"partition-id": 1, "num-partitions": 2}])
        run_id = deployment.start_run(_run_config(tmp_path, num_rounds=2, round_timeout=45.0))
        deployment.wait_for_lines(metrics, 1, timeout=300)
        # Round 1's train message reached node 1: its ClientApp is starting up and training when it is killed.
        deployment.wait_for_log("supernode-1", "Receiving: train message", count=2, timeout=120)
        deployment.kill_supernode(1)
        assert not tagged_pids(deployment.supernodes[1].tag)
        deployment.wait_for_lines(metrics, 2, timeout=180)
        assert deployment.wait_for_run(run_id, timeout=60) == "finished:completed", deployment.log_tail()
    first, second = read_json_lines(metrics)
    assert (first["accepted"], first["failed"]) == (2, 0)
    assert (second["accepted"], second["failed"], second["rejected"]) == (1, 1, 0), second
    assert second["uplink_wire_bytes"] < first["uplink_wire_bytes"]
    print(f"flower_digits, kill one SuperNode in round 1: {time.monotonic() - started:.1f} s")
