"""FedProx and SCAFFOLD on Flower give the model ``lightning-fl fit`` gives; other algorithms are refused at start.

SCAFFOLD's server variate travels down next to the model, each client's variate stays in its node's state, and the
variates' changes come back as the clients' shares of the algorithm's declared sum."""

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


@pytest.mark.parametrize("algorithm", [{"class_path": "lightning_fl.FedProx", "init_args": {"mu": 0.5}},
                                       {"class_path": "lightning_fl.Scaffold"}], ids=["FedProx", "Scaffold"])
def test_an_algorithm_on_flower_ends_with_the_model_of_lightning_fl_fit(tmp_path: Path,
                                                                         algorithm: dict[str, object]) -> None:
    config = _config_with(tmp_path, algorithm)
    run_config = {"config": str(config), "num-rounds": ROUNDS, "save-model": str(tmp_path / "model.pt")}
    reports = run_server(InProcessGrid(client_app, run_config, num_nodes=4),
                         Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    assert [r.accepted for r in reports] == [3] * ROUNDS
    if algorithm["class_path"] == "lightning_fl.Scaffold":  # c down to 3 clients, their changes of c_i back
        variate_bytes = 4 * sum(t.numel() for t in cli_free_params(config)) + 6  # raw float32, 6-byte header
        assert [r.algorithm_downlink_bytes for r in reports] == [3 * variate_bytes] * ROUNDS
        assert [r.algorithm_uplink_bytes for r in reports] == [3 * variate_bytes] * ROUNDS
    flower_model = torch.load(tmp_path / "model.pt", weights_only=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        cli = FederatedCLI(args=["fit", "--config", str(config), f"--trainer.max_epochs={ROUNDS}",
                                 f"--trainer.default_root_dir={tmp_path}",
                                 f"--trainer.logger.init_args.save_dir={tmp_path}"])
    # (either algorithm moves the clients' weights far more than 1e-5: a client that skipped it would not match)
    for name, tensor in cli.model.state_dict().items():
        torch.testing.assert_close(flower_model[name], tensor, rtol=0, atol=1e-5, msg=name)


def cli_free_params(config: Path) -> list[torch.Tensor]:
    """The trainable parameters of the config's model (SCAFFOLD's variates have their size)."""
    return [p for p in load_run_setup(str(config)).model.parameters() if p.requires_grad]


def test_an_algorithm_flower_cannot_reproduce_is_refused_at_start(tmp_path: Path) -> None:
    config = _config_with(tmp_path, {"class_path": "lightning_fl.DifferentialPrivacy",
                                     "init_args": {"clip_norm": 1.0, "noise_multiplier": 0.1}})
    with pytest.raises(FederatedConfigError,
                       match=r"only the algorithms \['FedProx', 'Scaffold'\]; remove \['DifferentialPrivacy'\]"):
        load_run_setup(str(config))
