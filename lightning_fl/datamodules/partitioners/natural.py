"""Natural partition: one client per writer or user, as given by per-sample group keys."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from lightning_fl.datamodules.partitioners.base import Partitioner
from lightning_fl.exceptions import FederatedConfigError


class NaturalPartitioner(Partitioner):
    """One client per distinct group key (writer, user), or groups merged into ``num_clients`` clients.

    With ``num_clients=None`` client ``i`` holds the samples of the ``i``-th group key in sorted order, and the
    result does not depend on ``seed``. With a smaller ``num_clients``, the groups are shuffled with ``seed`` and
    dealt round-robin to the clients, so every sample still belongs to exactly one client and each client holds
    whole groups. After :meth:`partition`, :attr:`client_keys` holds the group keys of every client.

    Args:
        num_clients: Number of clients, at most the number of distinct groups; ``None`` for one client per group.
        seed: Seed of the merge when ``num_clients`` is given.

    Raises:
        FederatedConfigError: If ``num_clients`` is invalid.

    Example:
        >>> partitioner = NaturalPartitioner()
        >>> parts = partitioner.partition(np.array([0, 1, 1, 0, 2]), groups=np.array(["b", "a", "b", "a", "a"]))
        >>> [p.tolist() for p in parts], [k.tolist() for k in partitioner.client_keys]
        ([[1, 3, 4], [0, 2]], [['a'], ['b']])
    """

    needs_labels: ClassVar[bool] = False

    def __init__(self, num_clients: int | None = None, seed: int = 0) -> None:
        super().__init__(num_clients, seed)
        self._client_keys: list[np.ndarray] | None = None

    @property
    def client_keys(self) -> list[np.ndarray]:
        """Sorted group keys held by each client, known after :meth:`partition`.

        Raises:
            RuntimeError: If :meth:`partition` has not been called yet.
        """
        if self._client_keys is None:
            raise RuntimeError("client_keys is known only after partition() has been called")
        return self._client_keys

    def _assign(
        self, num_samples: int, labels: np.ndarray | None, groups: np.ndarray | None, rng: np.random.Generator
    ) -> list[np.ndarray]:
        if groups is None:
            raise FederatedConfigError(
                "NaturalPartitioner needs the writer or user id of every sample, but the dataset has no per-sample "
                "group keys (groups=None); datasets that provide them: the LEAF datasets (FEMNIST, Shakespeare) and "
                "Synthetic; for other datasets use another partitioner (IID, Dirichlet, shards, quantity skew)"
            )
        keys, group_of_sample = np.unique(groups, return_inverse=True)
        group_of_sample = group_of_sample.reshape(-1)
        num_groups = len(keys)
        if self.num_clients is None:
            client_of_group = np.arange(num_groups)
            num_clients = num_groups
        elif self.num_clients > num_groups:
            raise FederatedConfigError(
                f"num_clients must be at most the number of distinct groups ({num_groups}), got {self.num_clients}; "
                "lower num_clients or use num_clients=None for one client per group"
            )
        else:
            num_clients = self.num_clients
            client_of_group = np.empty(num_groups, dtype=np.int64)
            client_of_group[rng.permutation(num_groups)] = np.arange(num_groups) % num_clients
        client_of_sample = client_of_group[group_of_sample]
        order = np.argsort(client_of_sample, kind="stable")
        cuts = np.cumsum(np.bincount(client_of_sample, minlength=num_clients))[:-1]
        self._client_keys = [keys[client_of_group == c] for c in range(num_clients)]
        return np.split(order, cuts)
