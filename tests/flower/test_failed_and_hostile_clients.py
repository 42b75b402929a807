"""A client that crashes and a client that sends hostile payloads, in Flower's simulation: the first counts as
failed, the second's updates are dropped, counted as rejected and logged with its node id, and every round completes
with the other clients."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from ray import cloudpickle

from lightning_fl.flower.run_setup import load_run_setup

try:  # tests/flower on sys.path (pytest's rootdir-prepend import mode)
    import misbehaving_client
    from flower_simulation import run_flower_simulation
except ImportError:  # pragma: no cover - tests as a package
    from . import misbehaving_client
    from .flower_simulation import run_flower_simulation

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "flower_digits.yaml"
ROUNDS = 3


def _clients_in_every_round() -> list[int]:
    dm = load_run_setup(str(CONFIG)).datamodule
    common = set(range(dm.num_clients))
    for round_idx in range(ROUNDS):
        common &= {int(c) for c in dm.plan_round(round_idx).clients}
    return sorted(common)


@pytest.mark.distributed
def test_crashing_and_hostile_clients_are_counted_and_the_rounds_complete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crashing, hostile = _clients_in_every_round()[:2]
    metrics_file = tmp_path / "rounds.jsonl"
    cloudpickle.register_pickle_by_value(misbehaving_client)  # sent by value: Ray workers need not import tests/
    with caplog.at_level(logging.WARNING, logger="lightning_fl.flower"):
        run_flower_simulation(
            tmp_path / "app",
            {"config": str(CONFIG), "num-rounds": ROUNDS, "round-timeout": 300.0, "metrics-file": str(metrics_file),
             "test-crashing-client": crashing, "test-hostile-client": hostile},
            num_supernodes=4, client_app=misbehaving_client.client_app,
        )
    reports = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    assert [r["round"] for r in reports] == list(range(ROUNDS))
    for report in reports:
        assert (report["accepted"], report["failed"], report["rejected"]) == (1, 1, 1)
        assert report["failed_clients"] == [crashing]
        assert report["rejected_clients"] == [hostile]
        node = report["rejected_nodes"][0]
        assert f"round {report['round']}: update of client {hostile} from node {node} rejected" in caplog.text
    reasons = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert "budget" in reasons[0] and "PayloadError" in reasons[1] and "shape" in reasons[2], reasons
    assert reports[-1]["val_acc"] > reports[0]["val_acc"]  # the honest client's updates still train the model
