"""The round plan: which clients train in a round, on which rank, in which batches.

Every rank computes the same plan from ``(seed, round_idx)`` alone, so no communication is needed to agree on
it. A plan is a frozen description; :mod:`lightning_fl.datamodules.loaders` turns this rank's part into batches.
Client sampling lives in :mod:`lightning_fl.datamodules.sampling`; its names still import from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lightning_fl.datamodules.client_indices import ClientIndices, client_sizes_of
from lightning_fl.datamodules.sampling import CLIENT_SAMPLING_MODES as CLIENT_SAMPLING_MODES
from lightning_fl.datamodules.sampling import ClientSampling as ClientSampling
from lightning_fl.datamodules.sampling import sample_clients as sample_clients
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.seeding import derive_seed


def assign_to_ranks(work: np.ndarray, world_size: int) -> list[list[int]]:
    """Spread items over ranks greedily, longest first, to balance the summed ``work``.

    Args:
        work: Amount of work of every item (for clients: their number of batches).
        world_size: Number of ranks.

    Returns:
        For every rank, the positions (into ``work``) of its items, in the order they run.

    Example:
        >>> assign_to_ranks(np.array([1, 5, 2, 2]), 2)
        [[1], [2, 3, 0]]
    """
    loads = [0] * world_size
    out: list[list[int]] = [[] for _ in range(world_size)]
    for pos in sorted(range(len(work)), key=lambda i: (-int(work[i]), i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        out[rank].append(pos)
        loads[rank] += int(work[pos])
    return out


@dataclass(frozen=True)
class Participation:
    """Who trains in a round and how many batches each, as decided by a participation hook (simulated devices,
    deadlines, asynchronous buffers) instead of :func:`sample_clients`.

    Attributes:
        clients: Client ids that train this round, sorted, without repeats (may be empty: the round then runs one
            padding batch per rank and the server keeps the global model).
        num_batches: For every client in ``clients``, how many of its batches it runs (a prefix of its local
            epochs' batches, at least 1); ``None`` runs all of them.

    Example:
        >>> Participation(np.array([1, 4]), np.array([2, 5])).clients.tolist()
        [1, 4]
    """

    clients: np.ndarray
    num_batches: np.ndarray | None = None


def owner_rank(client_id: int, world_size: int) -> int:
    """The one rule for which rank owns a client when clients are pinned: rank ``client_id % world_size``. Pinned
    plans run the client there, and per-client state (codec residuals, control variates) lives there.

    Example:
        >>> owner_rank(7, 2), owner_rank(7, 1)
        (1, 0)
    """
    return int(client_id) % int(world_size)


@dataclass(frozen=True)
class PlanRequest:
    """What the round's drivers ask of the plan of every round.

    Attributes:
        pin_clients: Run every client on its :func:`owner_rank` (per-client state is kept on a rank).
        participation: ``participation(round_idx) -> Participation``: who trains and for how many batches (simulated
            devices, deadlines, asynchronous buffers), called once per planned round on every rank and answering
            identically on every rank; ``None`` samples ``clients_per_round`` clients.
        cohort_size: Vectorized training: each rank's clients run in chunks of at most this many at once, one local
            step of a chunk per Trainer step (:mod:`~lightning_fl.datamodules.cohorts`); ``None``: one client after
            another.

    Example:
        >>> PlanRequest().merged(PlanRequest(pin_clients=True)).pin_clients
        True
    """

    pin_clients: bool = False
    participation: Callable[[int], Participation] | None = None
    cohort_size: int | None = None

    def merged(self, other: PlanRequest, names: tuple[str, str] = ("one driver", "another")) -> PlanRequest:
        """Both requests at once: pinned if either pins; at most one may decide participation (the same hook
        asked for twice counts once).

        Raises:
            FederatedConfigError: If both decide participation differently (``names`` says who they are).
        """
        mine, theirs = self.participation, other.participation
        if mine is not None and theirs is not None and mine != theirs:
            raise FederatedConfigError(
                f"{names[0]} and {names[1]} both decide who trains each round (a participation): use one of them"
            )
        return PlanRequest(
            pin_clients=self.pin_clients or other.pin_clients,
            participation=self.participation if self.participation is not None else other.participation,
            cohort_size=self.cohort_size if self.cohort_size is not None else other.cohort_size,
        )


@runtime_checkable
class RoundDriver(Protocol):
    """Something that runs the federated rounds of a fit (the server callback, or a module that runs its own
    rounds) and says what it needs of the round plans."""

    def plan_request(self) -> PlanRequest:
        """What this driver needs of every round's plan."""
        ...


def plan_request_of(trainer: Any) -> PlanRequest:
    """The merged :class:`PlanRequest` of every :class:`RoundDriver` among the Trainer's callbacks and its module
    (an empty request without a Trainer).

    Raises:
        FederatedConfigError: If two drivers decide participation.
    """
    if trainer is None:
        return PlanRequest()
    drivers = [cb for cb in getattr(trainer, "callbacks", []) if isinstance(cb, RoundDriver)]
    module = getattr(trainer, "lightning_module", None)
    if isinstance(module, RoundDriver) and module not in drivers:
        drivers.append(module)
    request, owner = PlanRequest(), "none"
    for driver in drivers:
        asked = driver.plan_request()
        if asked.participation is not None:
            request = request.merged(asked, (owner, _owner_name(asked.participation, driver)))
            owner = _owner_name(asked.participation, driver)
        else:
            request = request.merged(asked)
    return request


def _owner_name(participation: Callable[[int], Participation], driver: object) -> str:
    """Who decides participation: the bound method's object, else the driver."""
    return type(getattr(participation, "__self__", driver)).__name__


@dataclass(frozen=True)
class RoundPlan:
    """One rank's view of one round.

    Attributes:
        round_idx: The round.
        clients: All clients of the round (every rank), sorted.
        rank_clients: The clients this rank trains, in order.
        batches: This rank's batches: arrays of sample indices, padded to the longest rank.
        batch_client: For every batch of this rank, its client id, or -1 for a padding batch.
        first: For every batch, whether it is its client's first batch.
        last: For every batch, whether it is its client's last batch.
        rank_work: For every rank, the local step counts of its clients (in their order there): what a vectorized
            plan needs to pad every rank to the same number of steps.
    """

    round_idx: int
    clients: np.ndarray
    rank_clients: list[int]
    batches: list[np.ndarray]
    batch_client: np.ndarray
    first: np.ndarray
    last: np.ndarray
    rank_work: list[list[int]] | None = None

    @property
    def num_batches(self) -> int:
        """Batches in this round on this rank (equal on every rank)."""
        return len(self.batches)

    @property
    def num_padding_batches(self) -> int:
        """Batches whose effect is discarded, added so every rank runs the same number of batches."""
        return int((self.batch_client < 0).sum())

    @cached_property
    def client_num_batches(self) -> dict[int, int]:
        """The number of batches (local steps) of each client of this rank, counted once per plan."""
        ids, counts = np.unique(self.batch_client[self.batch_client >= 0], return_counts=True)
        return dict(zip(ids.tolist(), counts.tolist(), strict=True))


def client_batches(
    indices: np.ndarray,
    batch_size: int,
    local_epochs: int,
    shuffle: bool,
    seed: int,
    round_idx: int,
    client_id: int,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """The batches one client runs in a round: ``local_epochs`` passes over its samples, each shuffled from
    ``derive_seed(seed, "shuffle", round_idx, client_id, epoch)``; with ``drop_last`` each pass leaves out its
    last batch when it is smaller than ``batch_size``.

    Example:
        >>> [b.tolist() for b in client_batches(np.arange(5), 2, 1, False, 0, 0, 0)]
        [[0, 1], [2, 3], [4]]
        >>> [b.tolist() for b in client_batches(np.arange(5), 2, 1, False, 0, 0, 0, drop_last=True)]
        [[0, 1], [2, 3]]
    """
    out: list[np.ndarray] = []
    end = len(indices) - len(indices) % batch_size if drop_last else len(indices)
    for epoch in range(local_epochs):
        order = indices
        if shuffle:
            rng = np.random.default_rng(derive_seed(seed, "shuffle", round_idx, client_id, epoch))
            order = indices[rng.permutation(len(indices))]
        out.extend(order[i : min(i + batch_size, end)] for i in range(0, end, batch_size))
    return out


def num_client_batches(size: int, batch_size: int, local_epochs: int, drop_last: bool = False) -> int:
    """Number of batches a client of ``size`` samples runs in a round.

    Example:
        >>> num_client_batches(5, 2, 3), num_client_batches(5, 2, 3, drop_last=True)
        (9, 6)
    """
    per_epoch = size // batch_size if drop_last else math.ceil(size / batch_size)
    return local_epochs * per_epoch


def build_round_plan(
    round_idx: int,
    client_indices: Sequence[np.ndarray],
    *,
    clients_per_round: int,
    batch_size: int,
    local_epochs: int,
    client_sampling: ClientSampling,
    shuffle: bool,
    seed: int,
    world_size: int,
    rank: int,
    pin_clients: bool = False,
    participation: Participation | None = None,
    drop_last: bool = False,
    max_client_batches: int | None = None,
) -> RoundPlan:
    """Sample the round's clients, spread them over ranks and list this rank's batches.

    Clients go to ranks longest first (balanced), or, with ``pin_clients``, always to their :func:`owner_rank`
    (``client_id % world_size``), so per-client state kept on a rank (error-feedback residuals) stays with its
    client. Ranks with less work are padded with copies of a real batch of the round (their effect is discarded
    by the server callback) so that every rank runs the same number of batches: Lightning runs a collective in
    every training batch.

    A ``participation`` (from a hook such as :class:`~lightning_fl.callbacks.SystemsSimulation`) replaces the
    sampling: its clients train, each for its first ``num_batches`` batches. With no client at all every rank runs
    one padding batch, so the server callback still closes the round. ``drop_last`` drops every local epoch's
    short last batch (see :func:`client_batches`).

    With ``client_indices`` a :class:`~lightning_fl.datamodules.client_indices.ClientIndices` (the data module's) a
    plan costs O(clients_per_round), whatever the number of clients: the clients' sizes and sampling distribution
    are read from it, not recomputed.
    """
    sizes = client_sizes_of(client_indices)
    if participation is None:
        cdf = None
        if client_sampling == "size" and isinstance(client_indices, ClientIndices):
            cdf = client_indices.sampling_cdf
        clients = sample_clients(round_idx, sizes, clients_per_round, client_sampling, seed, cdf=cdf)
        work = np.array([num_client_batches(int(sizes[c]), batch_size, local_epochs, drop_last) for c in clients])
    else:
        clients, work = _checked_participation(participation, sizes, batch_size, local_epochs, drop_last)
    if max_client_batches is not None:
        work = np.minimum(work, max_client_batches)
    if pin_clients:
        per_rank = [[pos for pos, c in enumerate(clients) if owner_rank(c, world_size) == r] for r in range(world_size)]
    else:
        per_rank = assign_to_ranks(work, world_size)
    total = max(int(work[pos].sum()) for pos in [np.array(p, dtype=np.int64) for p in per_rank])
    total = max(total, 1)  # a round without clients still runs one (padding) batch per rank
    rank_clients = [int(clients[pos]) for pos in per_rank[rank]]
    caps = dict(zip(clients.tolist(), work.tolist(), strict=True))
    batches: list[np.ndarray] = []
    batch_client: list[int] = []
    first: list[bool] = []
    last: list[bool] = []
    for client_id in rank_clients:
        own = client_batches(
            client_indices[client_id], batch_size, local_epochs, shuffle, seed, round_idx, client_id, drop_last
        )
        own = own[: caps[client_id]]
        batches.extend(own)
        batch_client.extend([client_id] * len(own))
        first.extend([True] + [False] * (len(own) - 1))
        last.extend([False] * (len(own) - 1) + [True])
    if len(batches) < total:
        filler = client_indices[int(clients[0]) if len(clients) else 0][:batch_size]
        pad = total - len(batches)
        batches.extend([filler] * pad)
        batch_client.extend([-1] * pad)
        first.extend([False] * pad)
        last.extend([False] * pad)
    return RoundPlan(
        round_idx=round_idx,
        clients=clients,
        rank_clients=rank_clients,
        batches=batches,
        batch_client=np.array(batch_client, dtype=np.int64),
        first=np.array(first, dtype=bool),
        last=np.array(last, dtype=bool),
        rank_work=[[int(work[pos]) for pos in positions] for positions in per_rank],
    )


def _checked_participation(
    participation: Participation, sizes: np.ndarray, batch_size: int, local_epochs: int, drop_last: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The participation's clients and their batch counts, checked against the partition."""
    clients = np.asarray(participation.clients, dtype=np.int64).reshape(-1)
    if len(clients) and (clients.min() < 0 or clients.max() >= len(sizes) or np.any(np.diff(clients) <= 0)):
        raise FederatedConfigError(
            f"participation.clients must be sorted, distinct client ids in [0, {len(sizes) - 1}], "
            f"got {clients.tolist()}"
        )
    full = np.array(
        [num_client_batches(int(sizes[c]), batch_size, local_epochs, drop_last) for c in clients], dtype=np.int64
    )
    if participation.num_batches is None:
        return clients, full
    work = np.asarray(participation.num_batches, dtype=np.int64).reshape(-1)
    if len(work) != len(clients) or np.any(work < 1) or np.any(work > full):
        raise FederatedConfigError(
            f"participation.num_batches must give every client between 1 and its batch count {full.tolist()}, "
            f"got {work.tolist()}"
        )
    return clients, work
