"""Pathological non-IID partition by label-sorted shards (McMahan et al., 2017)."""

from __future__ import annotations

import numpy as np

from lightning_fl.checks import check_int
from lightning_fl.datamodules.partitioners.base import Partitioner
from lightning_fl.exceptions import FederatedConfigError


class ShardPartitioner(Partitioner):
    """Sorts the samples by label, cuts them into equal shards and gives each client ``shards_per_client`` shards.

    This is the "pathological non-IID" split of McMahan et al. (2017), "Communication-Efficient Learning of Deep
    Networks from Decentralized Data": with 100 clients and 2 shards each, most MNIST clients see only two digits.
    The samples are shuffled within each label before sorting, so a different ``seed`` also changes which samples
    of a label land in which shard. Shards hold ``N // (num_clients * shards_per_client)`` or one more sample.

    After :meth:`partition`, :attr:`client_shards` holds the shard ids of every client.

    Args:
        num_clients: Number of clients, at least 1.
        shards_per_client: Shards per client, at least 1; each client sees at most this many labels when shard
            boundaries fall on label boundaries (and at most ``2 * shards_per_client`` otherwise).
        seed: Seed of the shuffle and of the shard assignment.

    Raises:
        FederatedConfigError: If an argument is invalid.

    Example:
        >>> labels = np.repeat(np.arange(4), 6)  # 8 shards of 3 samples, 2 shards per label
        >>> parts = ShardPartitioner(num_clients=4, shards_per_client=2, seed=0).partition(labels)
        >>> [len(np.unique(labels[p])) <= 2 for p in parts]
        [True, True, True, True]
    """

    def __init__(self, num_clients: int, shards_per_client: int = 2, seed: int = 0) -> None:
        super().__init__(num_clients, seed)
        self.shards_per_client = check_int("shards_per_client", shards_per_client, low=1)
        self._client_shards: np.ndarray | None = None

    @property
    def client_shards(self) -> np.ndarray:
        """Shard ids of every client, shape (num_clients, shards_per_client), known after :meth:`partition`.

        Raises:
            RuntimeError: If :meth:`partition` has not been called yet.
        """
        if self._client_shards is None:
            raise RuntimeError("client_shards is known only after partition() has been called")
        return self._client_shards

    def _assign(
        self, num_samples: int, labels: np.ndarray | None, groups: np.ndarray | None, rng: np.random.Generator
    ) -> list[np.ndarray]:
        assert self.num_clients is not None
        num_shards = self.num_clients * self.shards_per_client
        assert labels is not None
        if num_samples < num_shards:
            raise FederatedConfigError(
                f"num_clients * shards_per_client ({self.num_clients} * {self.shards_per_client} = {num_shards} "
                f"shards) must be at most the number of training samples ({num_samples}); "
                "lower num_clients or shards_per_client"
            )
        shuffled = rng.permutation(num_samples)
        by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
        shards = np.array_split(by_label, num_shards)
        self._client_shards = rng.permutation(num_shards).reshape(self.num_clients, self.shards_per_client)
        return [np.concatenate([shards[s] for s in row]) for row in self._client_shards]
