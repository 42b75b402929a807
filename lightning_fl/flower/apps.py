"""The Flower apps: ``server_app`` and ``client_app``, driven by the same YAML as ``lightning-fl fit``.

Run config keys (``[tool.flwr.app.config]`` of the Flower app project, or ``flwr run --run-config``): ``config``
(the YAML's path), ``num-rounds``, ``round-timeout``, ``connect-timeout``, ``metrics-file``, ``save-model``
(:class:`~lightning_fl.flower.run_config.RunSettings`). A client's id is its node's ``partition-id``
(``--node-config "partition-id=0 num-partitions=2"`` for a supernode; set by Flower's simulation).
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from lightning_fl.flower.client import handle_query, handle_train
from lightning_fl.flower.server import run_server

__all__ = ["client_app", "server_app"]

server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    run_server(grid, context)


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    return handle_train(msg, context)


@client_app.query()
def _query(msg: Message, context: Context) -> Message:
    return handle_query(msg, context)
