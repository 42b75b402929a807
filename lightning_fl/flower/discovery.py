"""Which Flower node holds which client: each node's ``partition-id``, asked once at the run's start."""

from __future__ import annotations

import logging
import time

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from lightning_fl.exceptions import FederatedConfigError

__all__ = ["discover_clients"]

log = logging.getLogger("lightning_fl.flower")


def discover_clients(grid: Grid, num_clients: int, timeout: float, poll: float = 1.0) -> dict[int, int]:
    """Ask every connected node for its client id until each of the ``num_clients`` ids has a node or ``timeout``
    seconds have passed.

    Returns:
        ``{client_id: node_id}``; ids still without a node count as failed whenever they are sampled.

    Raises:
        FederatedConfigError: If two nodes claim the same client id, or no node answered at all.
    """
    found: dict[int, int] = {}
    asked: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(found) < num_clients and time.monotonic() < deadline:
        new = [node for node in grid.get_node_ids() if node not in asked]
        asked.update(new)
        messages = [Message(RecordDict(), dst_node_id=node, message_type="query") for node in new]
        for reply in grid.send_and_receive(messages, timeout=max(deadline - time.monotonic(), poll)):
            _record(found, reply, num_clients)
        if len(found) < num_clients:
            time.sleep(poll)
    if not found:
        raise FederatedConfigError(f"no node reported a client id within connect-timeout={timeout}s")
    missing = sorted(set(range(num_clients)) - set(found))
    if missing:
        log.warning("no node holds client ids %s; they count as failed when sampled", missing)
    return found


def _record(found: dict[int, int], reply: Message, num_clients: int) -> None:
    """Note one node's client id; a later claimant of a taken id is left out."""
    node = reply.metadata.src_node_id
    if reply.has_error():
        log.warning("node %s did not report its client id: %s", node, reply.error.reason)
        return
    record = reply.content.metric_records.get("client")
    client_id = record.get("partition-id") if record is not None else None
    if isinstance(client_id, bool) or not isinstance(client_id, int) or not 0 <= client_id < num_clients:
        log.warning("node %s reported no valid client id (got %r); it is left out", node, client_id)
        return
    if client_id in found and found[client_id] != node:  # one node may not stop the federation: the first keeps it
        log.warning("nodes %s and %s both claim partition-id %d: node %s keeps it, node %s is left out (give every "
                    "supernode its own --node-config 'partition-id=N')", found[client_id], node, client_id,
                    found[client_id], node)
        return
    found[client_id] = node
