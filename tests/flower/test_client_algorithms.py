"""Client-side algorithms (FedProx) on Flower give the model ``lightning-fl fit`` gives; others are refused at start."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from flwr.app import Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from lightning_fl.cli import FederatedCLI
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.flower.apps import client_app
from lightning_fl.flower.run_setup import load_run_setup
from lightning_fl.flower.server import run_server

try:  # tests/flower on sys.path (pytest's rootdir-prepend import mode)
    from inprocess_grid import InProcessGrid
except ImportError:  # pragma: no cover - tests as a package
    from .inprocess_grid import InProcessGrid

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "flower_digits.yaml"
ROUNDS = 2


def _config_with(tmp_path: Path, algorithm: dict[str, object]) -> Path:
    """flower_digits.yaml with ``algorithm`` after its FederatedAveraging callback."""
    config = yaml.safe_load(CONFIG.read_text())
    config["trainer"]["callbacks"].insert(1, algorithm)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1 if name != "_node_id" else 0)


def test_fedprox_on_flower_ends_with_the_model_of_lightning_fl_fit(tmp_path: Path) -> None:
    config = _config_with(tmp_path, {"class_path": "lightning_fl.FedProx", "init_args": {"mu": 0.5}})
    run_config = {"config": str(config), "num-rounds": ROUNDS, "save-model": str(tmp_path / "model.pt")}
    reports = run_server(InProcessGrid(client_app, run_config, num_nodes=4),
                         Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    assert [r.accepted for r in reports] == [3] * ROUNDS
    flower_model = torch.load(tmp_path / "model.pt", weights_only=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        cli = FederatedCLI(args=["fit", "--config", str(config), f"--trainer.max_epochs={ROUNDS}",
                                 f"--trainer.default_root_dir={tmp_path}",
                                 f"--trainer.logger.init_args.save_dir={tmp_path}"])
    # (mu=0.5 moves the clients' weights far more than 1e-5, so a client that skipped the term would not match)
    for name, tensor in cli.model.state_dict().items():
        torch.testing.assert_close(flower_model[name], tensor, rtol=0, atol=1e-5, msg=name)


def test_an_algorithm_that_acts_on_the_server_is_refused_at_start(tmp_path: Path) -> None:
    config = _config_with(tmp_path, {"class_path": "lightning_fl.Scaffold"})
    with pytest.raises(FederatedConfigError, match=r"client-side algorithms \['FedProx'\]; remove \['Scaffold'\]"):
        load_run_setup(str(config))
