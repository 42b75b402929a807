"""A Flower ``Grid`` that hands every message to a ClientApp in this process, one ``Context`` per node: the apps'
full server and client code paths without Ray (fast enough for every test run). A ClientApp that raises replies with
an error, as a SuperNode does.

A node in ``silent`` answers the start's query (it is connected) but never replies to a round's ``train`` message:
a client that died in the middle of its round, or missed the round timeout.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run

FIRST_NODE_ID = 1000


class InProcessGrid(Grid):
    """Nodes ``FIRST_NODE_ID + i`` with ``partition-id`` ``i``, for ``i < num_nodes``.

    Attributes:
        timeouts: The ``timeout`` of every ``send_and_receive`` call.
        delivered: ``(node_id, message_type)`` of every message a node received.
    """

    def __init__(self, client_app: ClientApp, run_config: dict[str, Any], num_nodes: int,
                 silent: Iterable[int] = ()) -> None:
        self.client_app = client_app
        self.contexts = {
            FIRST_NODE_ID + i: Context(run_id=1, node_id=FIRST_NODE_ID + i, state=RecordDict(),
                                       node_config={"partition-id": i, "num-partitions": num_nodes},
                                       run_config=dict(run_config))
            for i in range(num_nodes)
        }
        self.silent = set(silent)
        self.timeouts: list[float | None] = []
        self.delivered: list[tuple[int, str]] = []
        self._run = Run.create_empty(run_id=1)
        self._outbox: list[Message] = []

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            node = message.metadata.dst_node_id
            self.delivered.append((node, message.metadata.message_type))
            ids.append(str(len(self._outbox)))
            if node in self.silent and message.metadata.message_type == "train":
                continue
            try:
                self._outbox.append(self.client_app(message, self.contexts[node]))
            except Exception as err:  # a SuperNode turns a ClientApp's exception into an error reply
                self._outbox.append(Message(Error(code=0, reason=f"{type(err).__name__}: {err}"), reply_to=message))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        replies, self._outbox = self._outbox, []
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        self.timeouts.append(timeout)
        return self.pull_messages(self.push_messages(messages))
