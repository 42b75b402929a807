"""Running the lightning-fl Flower apps in Flower's in-process simulation (Ray backend), with a run config.

``flwr.simulation.run_simulation`` takes no run config, so this uses the function it wraps, ``_run_simulation``,
with an app directory whose ``pyproject.toml`` holds the run config (the clients read it from there) and a server
context holding the same run config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation.run_simulation import _run_simulation
from flwr.supercore.telemetry import EventType

from lightning_fl.flower.apps import client_app as default_client_app
from lightning_fl.flower.apps import server_app as default_server_app

PYPROJECT = """[project]
name = "lightning-fl-flower-test"
version = "1.0.0"

[tool.flwr.app]
publisher = "lightning-fl"

[tool.flwr.app.components]
serverapp = "lightning_fl.flower.apps:server_app"
clientapp = "lightning_fl.flower.apps:client_app"

[tool.flwr.app.config]
{config}
"""


def _toml_value(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def run_flower_simulation(app_dir: Path, run_config: dict[str, Any], num_supernodes: int, num_cpus: int = 2,
                          client_app: ClientApp | None = None, server_app: ServerApp | None = None) -> None:
    """Run the apps in Flower's simulation with ``num_supernodes`` nodes (partition-ids 0..n-1), one CPU each."""
    app_dir.mkdir(parents=True, exist_ok=True)
    lines = "\n".join(f"{key} = {_toml_value(value)}" for key, value in run_config.items())
    (app_dir / "pyproject.toml").write_text(PYPROJECT.format(config=lines))
    context = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config=dict(run_config))
    _run_simulation(
        num_supernodes=num_supernodes,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        client_app=client_app or default_client_app,
        server_app=server_app or default_server_app,
        backend_name="ray",
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                        "init_args": {"num_cpus": num_cpus}},
        server_app_context=context,
        app_dir=str(app_dir),
        is_app=True,  # the clients read the run config from app_dir's pyproject.toml
    )
