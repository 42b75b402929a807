"""Vectorized rounds: a rank's clients in chunks trained at once, one local step of a chunk per Trainer step.

A :class:`CohortPlan` regroups a :class:`~lightning_fl.datamodules.plan.RoundPlan`'s clients (the same clients, the
same batches) into chunks of at most ``cohort_size``, sorted by local step count, longest first (as FedJAX does, so a
chunk's clients run similar numbers of steps). A chunk runs as many Trainer steps as its longest client; a client is
active on its first ``steps`` of them and idle after. Every rank runs the same number of steps (Lightning runs a
collective in every step): ranks with fewer are padded with steps whose effect is discarded.

A :class:`CohortLoader` yields one :class:`CohortBatch` per Trainer step: the chunk's clients, which are active, and
the active clients' batches stacked on a leading client axis, grouped by batch size (a client's last batch may be
smaller; samples are never padded, so BatchNorm statistics stay each client's own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import tree_map
from torch.utils.data import Dataset, TensorDataset, default_collate

from lightning_fl.datamodules.loaders import RoundLoader
from lightning_fl.datamodules.plan import RoundPlan

__all__ = ["Chunk", "CohortBatch", "CohortLoader", "CohortPlan", "cohort_steps"]


def cohort_steps(work: Sequence[int], cohort_size: int) -> int:
    """Trainer steps of a rank whose clients run ``work`` local steps each, in chunks of ``cohort_size`` sorted
    longest first: the sum of every chunk's longest client.

    Example:
        >>> cohort_steps([3, 5, 1, 2], 2), cohort_steps([3, 5, 1, 2], 4), cohort_steps([], 2)
        (7, 5, 0)
    """
    ordered = sorted((int(w) for w in work), reverse=True)
    return sum(ordered[::cohort_size])


@dataclass(frozen=True)
class Chunk:
    """Clients trained at once: slot ``k`` is ``clients[k]``, which runs ``steps[k]`` local steps (non-increasing).

    Attributes:
        clients: Client ids, in slot order.
        steps: Local steps of each slot's client, longest first.
        first_step: The chunk's first Trainer step in the round.
    """

    clients: tuple[int, ...]
    steps: tuple[int, ...]
    first_step: int

    @property
    def length(self) -> int:
        """Trainer steps the chunk runs (its longest client's local steps)."""
        return self.steps[0]

    def finishing(self, local_step: int) -> list[int]:
        """The slots whose client takes its last local step at ``local_step``."""
        return [k for k, n in enumerate(self.steps) if n == local_step + 1]


class CohortPlan:
    """One rank's round as chunks of clients (see the module docstring).

    Args:
        plan: The round's plan (clients, batches; ``rank_work`` gives every rank's step counts).
        cohort_size: The most clients a chunk holds.

    Example:
        >>> from lightning_fl.datamodules.plan import build_round_plan
        >>> plan = build_round_plan(0, [np.arange(3), np.arange(3, 5), np.arange(5, 10)], clients_per_round=3,
        ...                         batch_size=2, local_epochs=1, client_sampling="all", shuffle=False, seed=0,
        ...                         world_size=1, rank=0)
        >>> cohorts = CohortPlan(plan, cohort_size=2)
        >>> [(c.clients, c.steps) for c in cohorts.chunks], cohorts.num_steps
        ([((2, 0), (3, 2)), ((1,), (1,))], 4)
    """

    def __init__(self, plan: RoundPlan, cohort_size: int) -> None:
        self.plan, self.cohort_size = plan, cohort_size
        counts = plan.client_num_batches
        #: Where each client's batches start in ``plan.batches``.
        self.offset = {int(plan.batch_client[i]): int(i) for i in np.flatnonzero(plan.first)}
        position = {c: i for i, c in enumerate(plan.rank_clients)}
        # longest first; among equal step counts, the larger last batch first: with one local epoch every step's
        # groups of equal batch sizes are then runs of consecutive slots (trained on views, not copies)
        last = {c: len(plan.batches[self.offset[c] + counts[c] - 1]) for c in plan.rank_clients}
        ordered = sorted(plan.rank_clients, key=lambda c: (-counts[c], -last[c], position[c]))
        self.chunks: list[Chunk] = []
        step = 0
        for start in range(0, len(ordered), cohort_size):
            members = ordered[start : start + cohort_size]
            chunk = Chunk(tuple(members), tuple(counts[c] for c in members), step)
            self.chunks.append(chunk)
            step += chunk.length
        others = [cohort_steps(w, cohort_size) for w in plan.rank_work] if plan.rank_work is not None else []
        #: Trainer steps of the round on this rank (equal on every rank; at least 1).
        self.num_steps = max([step, 1, *others])
        #: For every Trainer step, its chunk (-1 for a padding step) and its local step in the chunk.
        self.step_chunk = np.full(self.num_steps, -1, dtype=np.int64)
        self.step_local = np.zeros(self.num_steps, dtype=np.int64)
        for i, chunk in enumerate(self.chunks):
            self.step_chunk[chunk.first_step : chunk.first_step + chunk.length] = i
            self.step_local[chunk.first_step : chunk.first_step + chunk.length] = np.arange(chunk.length)

    def chunk_at(self, step: int) -> Chunk | None:
        """The chunk of Trainer step ``step`` (``None`` for a padding step)."""
        index = int(self.step_chunk[step])
        return self.chunks[index] if index >= 0 else None

    def is_first(self, step: int) -> bool:
        """Whether ``step`` is its chunk's first."""
        return self.step_chunk[step] >= 0 and self.step_local[step] == 0

    def closes_chunk(self, step: int) -> bool:
        """Whether ``step`` is its chunk's last."""
        chunk = self.chunk_at(step)
        return chunk is not None and int(self.step_local[step]) == chunk.length - 1

    def step_batches(self, step: int) -> tuple[list[int], list[np.ndarray]]:
        """The active slots of ``step`` and their batches' sample indices (a padding step: slot 0, a filler batch)."""
        chunk = self.chunk_at(step)
        if chunk is None:
            return [0], [self.plan.batches[0]]
        local = int(self.step_local[step])
        slots = [k for k, n in enumerate(chunk.steps) if n > local]
        return slots, [self.plan.batches[self.offset[chunk.clients[k]] + local] for k in slots]


class CohortBatch:
    """What one Trainer step of a chunk trains on.

    Attributes:
        clients: The chunk's client ids in slot order (``(-1,)`` for a padding step).
        active: ``bool`` tensor ``[K]``: the slots taking this step.
        groups: ``(slots, data)`` pairs: ``slots`` (int64 ``[G]``) and their batches stacked on a leading axis of
            size ``G``; one pair per batch size.
        num_samples: Samples in the step, over all active clients.
        spans: For every group, ``(first slot, G)`` when its slots are consecutive, else ``None``.
    """

    def __init__(self, clients: tuple[int, ...], active: torch.Tensor, groups: list[tuple[torch.Tensor, Any]],
                 num_samples: int, spans: list[tuple[int, int] | None] | None = None) -> None:
        self.clients, self.active, self.groups, self.num_samples = clients, active, groups, num_samples
        self.spans = spans if spans is not None else [_span(slots.tolist()) for slots, _ in groups]

    def to(self, *args: Any, **kwargs: Any) -> CohortBatch:
        """The batch on another device (Lightning moves batches with ``.to``); the slot indices move too."""
        groups = [(slots.to(*args, **kwargs), tree_map(lambda t: _to(t, args, kwargs), data))
                  for slots, data in self.groups]
        return CohortBatch(self.clients, self.active.to(*args, **kwargs), groups, self.num_samples, self.spans)


def _span(slots: list[int]) -> tuple[int, int] | None:
    """``(first, count)`` when ``slots`` are consecutive, else ``None``."""
    return (slots[0], len(slots)) if slots == list(range(slots[0], slots[0] + len(slots))) else None


def _to(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return value.to(*args, **kwargs) if isinstance(value, torch.Tensor) else value


def stacked_fetcher(dataset: Dataset, collate_fn: Callable[[list[Any]], Any] | None) -> Callable[..., Any]:
    """A function turning ``G`` equal-size index arrays into their batches stacked on a leading axis: one gather for
    in-memory tensors, else each batch collated (``collate_fn``, default PyTorch's) and the results stacked."""
    if isinstance(dataset, TensorDataset) and collate_fn is None:
        tensors = dataset.tensors

        def gather(arrays: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
            index = torch.from_numpy(np.concatenate(arrays).astype(np.int64, copy=False))
            return tuple(t[index].view(len(arrays), len(arrays[0]), *t.shape[1:]) for t in tensors)

        return gather
    collate = collate_fn if collate_fn is not None else default_collate

    def collate_and_stack(arrays: list[np.ndarray]) -> Any:
        batches = [collate([dataset[int(i)] for i in a]) for a in arrays]
        return tree_map(lambda *xs: torch.stack(xs), batches[0], *batches[1:])

    return collate_and_stack


class CohortLoader(RoundLoader):
    """Yields a :class:`CohortBatch` per Trainer step of a :class:`CohortPlan`; ``plan`` is the round's plan.

    Example:
        >>> from lightning_fl.datamodules.plan import build_round_plan
        >>> plan = build_round_plan(0, [np.arange(3), np.arange(3, 5)], clients_per_round=2, batch_size=2,
        ...                         local_epochs=1, client_sampling="all", shuffle=False, seed=0, world_size=1, rank=0)
        >>> loader = CohortLoader(CohortPlan(plan, 2), TensorDataset(torch.arange(5.0)))
        >>> [[(s.tolist(), d[0].tolist()) for s, d in b.groups] for b in loader]
        [[([0, 1], [[0.0, 1.0], [3.0, 4.0]])], [([0], [[2.0]])]]
    """

    def __init__(self, cohorts: CohortPlan, dataset: Dataset,
                 collate_fn: Callable[[list[Any]], Any] | None = None) -> None:
        super().__init__(cohorts.plan, [])
        self.cohorts = cohorts
        self._fetch = stacked_fetcher(dataset, collate_fn)

    def __len__(self) -> int:
        return self.cohorts.num_steps

    def __iter__(self) -> Iterator[CohortBatch]:
        for step in range(self.cohorts.num_steps):
            yield self.batch(step)

    def batch(self, step: int) -> CohortBatch:
        """The :class:`CohortBatch` of Trainer step ``step``."""
        cohorts = self.cohorts
        chunk = cohorts.chunk_at(step)
        clients = chunk.clients if chunk is not None else (-1,)
        slots, arrays = cohorts.step_batches(step)
        active = torch.zeros(len(clients), dtype=torch.bool)
        active[slots] = True
        by_size: dict[int, list[int]] = {}
        for i, array in enumerate(arrays):
            by_size.setdefault(len(array), []).append(i)
        groups = [(torch.tensor([slots[i] for i in members], dtype=torch.int64),
                   self._fetch([arrays[i] for i in members]))
                  for _, members in sorted(by_size.items(), reverse=True)]
        return CohortBatch(clients, active, groups, sum(len(a) for a in arrays))
