"""Iterables that feed a round's batches to the Trainer.

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
