"""Iterables that feed a round's batches to the Trainer.

The data module hands Lightning a :class:`RoundLoader`: the round's :class:`~lightning_fl.datamodules.plan.RoundPlan`
travelling with its batches. It is not a ``DataLoader``, so Lightning injects no ``DistributedSampler`` into it
whatever ``use_distributed_sampler`` says, and its ``__iter__`` is a generator, so Lightning's one ``iter()``
probe starts no worker process. The runtime reads the plan with :func:`round_plan_of`. Evaluation loaders are
wrapped in a plain :class:`BatchLoader` for the same reason.

For in-memory tensors (:class:`torch.utils.data.TensorDataset` and subclasses) with ``num_workers=0`` the
loader indexes whole batches at once, as a hand-written loop would; otherwise it is an ordinary
``DataLoader`` driven by the plan's batches, so any map-style dataset, worker processes and pinned memory work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_fl.datamodules.plan import RoundPlan
from lightning_fl.exceptions import FederatedRuntimeError


class TensorBatchLoader:
    """Yields ``tuple(t[batch] for t in dataset.tensors)`` for each index array in ``batches``.

    Example:
        >>> ds = TensorDataset(torch.arange(6.0), torch.arange(6))
        >>> [b[1].tolist() for b in TensorBatchLoader(ds, [np.array([0, 1]), np.array([5])])]
        [[0, 1], [5]]
    """

    def __init__(self, dataset: TensorDataset, batches: Sequence[np.ndarray]) -> None:
        self.tensors = dataset.tensors
        self.batches = [torch.from_numpy(np.ascontiguousarray(b, dtype=np.int64)) for b in batches]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        tensors = self.tensors
        for index in self.batches:
            yield tuple(t[index] for t in tensors)


def make_batch_loader(
    dataset: Dataset,
    batches: Sequence[np.ndarray],
    num_workers: int = 0,
    pin_memory: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> Iterable[Any]:
    """The fastest loader that yields exactly ``batches`` (index arrays into ``dataset``), in order, collated by
    ``collate_fn`` (``None``: PyTorch's default collation)."""
    if isinstance(dataset, TensorDataset) and num_workers == 0 and collate_fn is None:
        return TensorBatchLoader(dataset, batches)
    return DataLoader(
        dataset,
        batch_sampler=[b.tolist() for b in batches],
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        collate_fn=collate_fn,
    )


def eval_batches(num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
    """Sequential batches over this rank's share (``rank::world_size``) of an evaluation set, no padding.

    Example:
        >>> [b.tolist() for b in eval_batches(5, 2, rank=1, world_size=2)]
        [[1, 3]]
    """
    own = np.arange(rank, num_samples, world_size, dtype=np.int64)
    return [own[i : i + batch_size] for i in range(0, len(own), batch_size)]


class BatchLoader:
    """Wraps a loader so that Lightning treats it as a plain iterable: no sampler is injected, and ``iter()`` is a
    generator that starts nothing until the first batch is asked for.

    Example:
        >>> loader = BatchLoader([[1, 2], [3]])
        >>> len(loader), list(loader)
        (2, [[1, 2], [3]])
    """

    def __init__(self, inner: Iterable[Any]) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        yield from self.inner


class RoundLoader(BatchLoader):
    """This rank's batches of one round, with the round's plan (which client each batch belongs to).

    It defines no ``state_dict``: Lightning saves nothing of it in checkpoints (the plan is recomputed from the
    seed and the round).

    Example:
        >>> from lightning_fl.datamodules.plan import build_round_plan
        >>> plan = build_round_plan(0, [np.arange(3), np.arange(3, 5)], clients_per_round=2, batch_size=2,
        ...                         local_epochs=1, client_sampling="all", shuffle=False, seed=0, world_size=1, rank=0)
        >>> loader = RoundLoader(plan, [b.tolist() for b in plan.batches])
        >>> len(loader), loader.plan.batch_client.tolist(), list(loader)
        (3, [0, 0, 1], [[0, 1], [2], [3, 4]])
    """

    def __init__(self, plan: RoundPlan, inner: Iterable[Any]) -> None:
        super().__init__(inner)
        self.plan = plan

    def __len__(self) -> int:
        return self.plan.num_batches


def round_plan_of(trainer: Any) -> RoundPlan:
    """The plan of the round the Trainer is running, read from its train loader (valid from
    ``on_train_epoch_start``, after Lightning built the round's loader).

    Raises:
        FederatedRuntimeError: If the train loader is not a :class:`RoundLoader` (it was not built by a
            ``FederatedDataModule``), or its plan is of another round than ``trainer.current_epoch`` (the loader was
            not rebuilt for this round).
    """
    loader = trainer.train_dataloader
    if not isinstance(loader, RoundLoader):
        raise FederatedRuntimeError(
            "the train loader must be the FederatedDataModule's (a RoundLoader from its train_dataloader()); do not "
            f"pass train_dataloaders= to fit() or override train_dataloader(), got {type(loader).__name__}"
        )
    if loader.plan.round_idx != trainer.current_epoch:
        raise FederatedRuntimeError(
            f"the train loader holds the plan of round {loader.plan.round_idx}, but the Trainer runs round "
            f"{trainer.current_epoch}: it was not rebuilt for the round (reload_dataloaders_every_n_epochs must be 1)"
        )
    return loader.plan
