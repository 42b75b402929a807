"""Per-client state that persists across rounds (SCAFFOLD control variates, personal layers), on CPU, bounded.

With several processes every client is pinned to its :func:`~lightning_fl.datamodules.plan.owner_rank`
(``client_id % world_size``, asked for with a ``PlanRequest``), so each rank holds the state of its own clients; a
checkpoint gathers the stores of all ranks and keeps every client's entry from its owner, as
:mod:`lightning_fl.federation.codec_state` does for codec residuals.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import torch
import torch.distributed as dist

from lightning_fl.checks import check_int
from lightning_fl.datamodules.plan import owner_rank

T = TypeVar("T")


class ClientStore(Generic[T]):
    """A least-recently-used map ``client_id -> state`` with at most ``max_clients`` entries.

    When the bound is reached the client used longest ago is dropped: it starts afresh the next time it is
    sampled, as a newly joining client would.

    Args:
        max_clients: Keep at most this many clients per process (``None``: every client).

    Raises:
        FederatedConfigError: If ``max_clients`` is not ``None`` or a positive integer.

    Example:
        >>> store = ClientStore(max_clients=2)
        >>> for c in (0, 1, 2):
        ...     store.put(c, torch.zeros(3))
        >>> sorted(store), store.nbytes
        ([1, 2], 24)
    """

    def __init__(self, max_clients: int | None = None) -> None:
        self.max_clients = None if max_clients is None else check_int("max_clients", max_clients, low=1)
        self._entries: OrderedDict[int, T] = OrderedDict()

    def get(self, client_id: int) -> T | None:
        """The client's state, or ``None`` when it has none (never trained, or evicted)."""
        value = self._entries.get(client_id)
        if value is not None:
            self._entries.move_to_end(client_id)
        return value

    def peek(self, client_id: int) -> T | None:
        """The client's state without marking it as recently used (for evaluation, which must not change what a
        bounded store evicts)."""
        return self._entries.get(client_id)

    def put(self, client_id: int, value: T) -> None:
        """Store the client's state, evicting the least recently used clients beyond the bound."""
        self._entries[client_id] = value
        self._entries.move_to_end(client_id)
        self._evict()

    def _evict(self) -> None:
        if self.max_clients is not None:
            while len(self._entries) > self.max_clients:
                self._entries.popitem(last=False)

    def items(self) -> list[tuple[int, T]]:
        """``(client_id, state)`` pairs, least recently used first (without touching the order)."""
        return list(self._entries.items())

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._entries

    def __iter__(self) -> Iterator[int]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored tensors."""
        return sum(t.numel() * t.element_size() for v in self._entries.values() for t in _tensors(v))

    def keep_owned(self, rank: int, world_size: int) -> None:
        """Drop the clients another rank owns (after loading a merged checkpoint on every rank)."""
        for client_id in [c for c in self._entries if owner_rank(c, world_size) != rank]:
            del self._entries[client_id]

    def state_dict(self) -> dict[int, T]:
        """The entries, least recently used first, merged over all ranks when several processes train (a
        collective call: every rank must make it, as Lightning does when it dumps a checkpoint)."""
        local = dict(self._entries)
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return local
        world = dist.get_world_size()
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, local)
        return merge_by_owner(gathered)

    def load_state_dict(self, state_dict: dict[int, T]) -> None:
        """Restore what :meth:`state_dict` returned (tensors moved to CPU)."""
        self._entries = OrderedDict((int(c), _to_cpu(v)) for c, v in state_dict.items())
        self._evict()


def merge_by_owner(states: list[dict[int, Any]]) -> dict[int, Any]:
    """Merge per-rank client maps, keeping each client's entry from its owner rank (:func:`owner_rank`), rank by
    rank in each rank's own order (so a rank that reloads its clients finds them in the order it kept them).

    Example:
        >>> merge_by_owner([{2: "a", 1: "stale", 0: "b"}, {1: "c", 3: "d"}])
        {2: 'a', 0: 'b', 1: 'c', 3: 'd'}
    """
    world = len(states)
    merged: dict[int, Any] = {}
    for rank, state in enumerate(states):
        for client_id, value in state.items():
            if owner_rank(client_id, world) == rank:
                merged[client_id] = value
    return merged


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for t in value if isinstance(t, torch.Tensor)]
    return []


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu")
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value
