"""Flower's in-process simulation of the lightning-fl apps ends where ``lightning-fl fit`` ends on the same YAML.

The config (``configs/flower_digits.yaml``) is compressed both ways: 8-bit stochastic quantization down (seeded per
round, client and tensor), 4-bit quantization with error feedback up (residuals kept on each client between rounds
in Flower's ``context.state``), server momentum, BatchNorm with integer buffers. Three rounds, 4 supernodes, Ray
with 1 CPU per client (two actor processes on this 2-core machine).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from lightning_fl.cli import FederatedCLI
from lightning_fl.federation.host import FederatedAveraging

try:  # tests/flower on sys.path (pytest's rootdir-prepend import mode)
    from flower_simulation import run_flower_simulation
except ImportError:  # pragma: no cover - tests as a package
    from .flower_simulation import run_flower_simulation

pytestmark = pytest.mark.distributed

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "flower_digits.yaml"
ROUNDS = 3
LENGTH_PREFIX = 4  # bytes Payload.to_bytes puts in front of every payload


def _simulated_fit(root: Path) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """``lightning-fl fit`` of the config: the final model and the rounds' logged metrics."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        cli = FederatedCLI(args=["fit", "--config", str(CONFIG), f"--trainer.max_epochs={ROUNDS}",
                                 f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}"])
    (averaging,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, FederatedAveraging)]
    return cli.model.state_dict(), averaging.history


def test_flower_simulation_ends_with_the_model_and_bytes_of_lightning_fl_fit(tmp_path: Path) -> None:
    metrics_file, model_file = tmp_path / "rounds.jsonl", tmp_path / "model.pt"
    run_flower_simulation(tmp_path / "app", {"config": str(CONFIG), "num-rounds": ROUNDS, "round-timeout": 300.0,
                                             "metrics-file": str(metrics_file), "save-model": str(model_file)},
                          num_supernodes=4)
    reports = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    flower_model = torch.load(model_file, weights_only=True)
    fit_model, history = _simulated_fit(tmp_path / "fit")

    assert [r["round"] for r in reports] == list(range(ROUNDS))
    for report, logged in zip(reports, history, strict=True):
        assert (report["accepted"], report["failed"], report["rejected"]) == (3, 0, 0)
        assert report["uplink_bytes"] == logged["fl/uplink_bytes"]
        assert report["downlink_bytes"] == logged["fl/downlink_bytes"]
        # what the messages carry: the codecs' payload bytes plus a 4-byte length per tensor, never dense floats
        tensors_sent = len(flower_model) * report["accepted"]
        assert report["uplink_message_bytes"] == report["uplink_bytes"] + LENGTH_PREFIX * tensors_sent
        assert report["downlink_message_bytes"] == report["downlink_bytes"] + LENGTH_PREFIX * tensors_sent
        assert report["uplink_message_bytes"] < 0.7 * report["dense_bytes"] * report["accepted"]
    assert flower_model.keys() == fit_model.keys()
    for name, tensor in fit_model.items():
        torch.testing.assert_close(flower_model[name], tensor, rtol=0, atol=1e-5, msg=name)
    assert reports[-1]["val_acc"] > reports[0]["val_acc"]
