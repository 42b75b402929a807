"""IID partition: every client draws a uniformly random, near-equal share of the samples."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from lightning_fl.datamodules.client_indices import ClientIndices
from lightning_fl.datamodules.partitioners.base import Partitioner


class IIDPartitioner(Partitioner):
    """Splits a random permutation of the samples into ``num_clients`` near-equal parts.

    Client sizes differ by at most one sample; label distributions match the global one in expectation.

    Args:
        num_clients: Number of clients, at least 1 and at most the number of samples.
        seed: Seed of the permutation.

    Raises:
        FederatedConfigError: If ``num_clients`` or ``seed`` is invalid.

    Example:
        >>> parts = IIDPartitioner(num_clients=3, seed=0).partition(np.zeros(10, dtype=np.int64))
        >>> [len(p) for p in parts]
        [4, 3, 3]
        >>> sorted(np.concatenate(parts).tolist()) == list(range(10))
        True
    """

    needs_labels: ClassVar[bool] = False

    def __init__(self, num_clients: int, seed: int = 0) -> None:
        super().__init__(num_clients, seed)

    def _assign(
        self, num_samples: int, labels: np.ndarray | None, groups: np.ndarray | None, rng: np.random.Generator
    ) -> ClientIndices:
        assert self.num_clients is not None
        # the parts of np.array_split(permutation, num_clients), kept flat: the first num_samples % num_clients
        # clients hold one sample more
        small, larger = divmod(num_samples, self.num_clients)
        sizes = np.full(self.num_clients, small, dtype=np.int64)
        sizes[:larger] += 1
        offsets = np.zeros(self.num_clients + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        return ClientIndices(rng.permutation(num_samples), offsets)
