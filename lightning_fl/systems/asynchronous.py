"""FedBuff's event simulation (Nguyen et al. 2022): clients in flight, a buffer of finished updates, model versions.

Up to ``concurrency`` clients train at once, each from the model version that was current when it started. They
finish in simulated-clock order; every finished update goes into the buffer and its client's slot is refilled at
once with an idle client (one neither in flight nor waiting in the buffer), which starts from the current version.
When ``buffer_size`` updates are buffered the server applies them: the version advances and the buffered clients
become idle. An update's staleness is the number of versions applied between its client's start and the update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.seeding import derive_seed


@dataclass(frozen=True)
class ClientRun:
    """One client's training: the version it started from and when its update reaches the server."""

    client_id: int
    version: int
    start_seconds: float
    finish_seconds: float


class BufferedAsyncSchedule:
    """The queue of clients in flight, advanced one server update at a time.

    Args:
        num_clients: Clients that can be drawn.
        concurrency: Clients in flight at once, in ``[1, num_clients]``.
        buffer_size: Updates per server update (FedBuff's K), in ``[1, num_clients]``.
        seed: Seed of which idle client starts next (the ``i``-th draw uses ``derive_seed(seed, "fedbuff", "draw",
            i)``).

    Example:
        >>> schedule = BufferedAsyncSchedule(num_clients=3, concurrency=3, buffer_size=3, seed=0)
        >>> [(r.client_id, r.version) for r in schedule.next_update(lambda client, draw: 1.0 + client)]
        [(0, 0), (1, 0), (2, 0)]
        >>> schedule.version, schedule.now
        (1, 3.0)
    """

    def __init__(self, num_clients: int, concurrency: int, buffer_size: int, seed: int) -> None:
        for name, value in (("concurrency", concurrency), ("buffer_size", buffer_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= num_clients:
                raise FederatedConfigError(
                    f"{name} must be an integer in [1, num_clients={num_clients}], got {value!r}"
                )
        self.num_clients = int(num_clients)
        self.concurrency = int(concurrency)
        self.buffer_size = int(buffer_size)
        self.seed = int(seed)
        self.now = 0.0
        self.version = 0
        self.draws = 0
        self.in_flight: list[ClientRun] = []

    def referenced_versions(self) -> set[int]:
        """Versions that clients in flight started from (the server must keep those models)."""
        return {run.version for run in self.in_flight}

    def _refill(self, busy: set[int], duration: Callable[[int, int], float]) -> None:
        while len(self.in_flight) < self.concurrency:
            idle = sorted(set(range(self.num_clients)) - busy - {run.client_id for run in self.in_flight})
            if not idle:
                return
            rng = np.random.default_rng(derive_seed(self.seed, "fedbuff", "draw", self.draws))
            client = idle[int(rng.integers(len(idle)))]
            seconds = float(duration(client, self.draws))
            if not seconds >= 0:
                raise FederatedConfigError(
                    f"a client's round must take >= 0 seconds, got {seconds} for client {client}"
                )
            self.draws += 1
            self.in_flight.append(ClientRun(client, self.version, self.now, self.now + seconds))

    def next_update(self, duration: Callable[[int, int], float]) -> list[ClientRun]:
        """Run the clock until ``buffer_size`` updates are buffered (fewer only when no client is left in flight),
        apply them (the version advances) and return them in finish order.

        Args:
            duration: ``duration(client_id, draw)`` gives the simulated seconds of a client's round that starts
                now (``draw`` numbers the starts, for per-start randomness).
        """
        buffered: list[ClientRun] = []
        self._refill(set(), duration)
        while len(buffered) < self.buffer_size and self.in_flight:
            first = min(range(len(self.in_flight)), key=lambda i: (self.in_flight[i].finish_seconds,
                                                                   self.in_flight[i].client_id))
            run = self.in_flight.pop(first)
            self.now = run.finish_seconds
            buffered.append(run)
            self._refill({r.client_id for r in buffered}, duration)
        self.version += 1
        return buffered

    def state_dict(self) -> dict[str, Any]:
        """The clock, the version, the draw counter and the clients in flight."""
        return {
            "now": self.now,
            "version": self.version,
            "draws": self.draws,
            "in_flight": [(r.client_id, r.version, r.start_seconds, r.finish_seconds) for r in self.in_flight],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.now = float(state["now"])
        self.version = int(state["version"])
        self.draws = int(state["draws"])
        self.in_flight = [ClientRun(int(c), int(v), float(s), float(f)) for c, v, s, f in state["in_flight"]]


def staleness_weight(staleness: int, rule: str, exponent: float = 0.5) -> float:
    """FedBuff's down-weighting of a stale update.

    Args:
        staleness: Versions applied since the client started.
        rule: ``"constant"`` (1), ``"sqrt"`` (``1 / sqrt(1 + s)``) or ``"polynomial"`` (``(1 + s) ** -exponent``).
        exponent: The polynomial's exponent (``0.5`` equals ``"sqrt"``).

    Example:
        >>> staleness_weight(3, "sqrt"), staleness_weight(3, "polynomial", 1.0), staleness_weight(0, "sqrt")
        (0.5, 0.25, 1.0)
    """
    if rule == "constant" or staleness == 0:
        return 1.0
    if rule == "sqrt":
        return float(1.0 / np.sqrt(1.0 + staleness))
    if rule == "polynomial":
        return float((1.0 + staleness) ** -exponent)
    raise FederatedConfigError(f"staleness must be 'constant', 'sqrt' or 'polynomial', got {rule!r}")
