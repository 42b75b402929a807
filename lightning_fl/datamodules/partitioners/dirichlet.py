"""Label-skew partition: per-class client proportions drawn from a Dirichlet distribution."""

from __future__ import annotations

import numpy as np

from lightning_fl.checks import check_int, check_positive
from lightning_fl.datamodules.partitioners.base import Partitioner
from lightning_fl.exceptions import FederatedConfigError


class DirichletPartitioner(Partitioner):
    """Label skew: for every class, the share of each client is drawn from ``Dir(alpha, ..., alpha)``.

    The samples of each class are shuffled and cut at the cumulative Dirichlet proportions, as in flwr-datasets'
    ``DirichletPartitioner`` (Hsu et al., 2019). Small ``alpha`` (0.1) gives clients that see few labels; large
    ``alpha`` (100) approaches an IID split. The whole draw is repeated until every client holds at least
    ``min_size`` samples, at most ``max_retries`` times.

    Args:
        num_clients: Number of clients, at least 1.
        alpha: Concentration of the Dirichlet distribution, a finite number > 0.
        seed: Seed of the draws.
        min_size: Fewest samples any client may hold, at least 0; ``num_clients * min_size`` must not exceed the
            number of samples.
        max_retries: How many draws to try before giving up, at least 1.

    Raises:
        FederatedConfigError: If an argument is invalid.

    Example:
        >>> labels = np.repeat(np.arange(3), 20)
        >>> parts = DirichletPartitioner(num_clients=4, alpha=0.5, seed=0).partition(labels)
        >>> len(parts), sum(len(p) for p in parts), min(len(p) for p in parts) >= 1
        (4, 60, True)
    """

    def __init__(
        self, num_clients: int, alpha: float, seed: int = 0, min_size: int = 1, max_retries: int = 100
    ) -> None:
        super().__init__(num_clients, seed)
        self.alpha = check_positive("alpha", alpha)
        self.min_size = check_int("min_size", min_size, low=0)
        self.max_retries = check_int("max_retries", max_retries, low=1)

    def _assign(
        self, num_samples: int, labels: np.ndarray | None, groups: np.ndarray | None, rng: np.random.Generator
    ) -> list[np.ndarray]:
        assert self.num_clients is not None
        assert labels is not None
        n = num_samples
        self._check_min_size(n, self.min_size)
        class_indices = [np.flatnonzero(labels == k) for k in np.unique(labels)]
        concentration = np.full(self.num_clients, self.alpha)
        smallest = 0
        for _ in range(self.max_retries):
            parts: list[list[np.ndarray]] = [[] for _ in range(self.num_clients)]
            for indices in class_indices:
                indices = rng.permutation(indices)
                proportions = rng.dirichlet(concentration)
                cuts = (np.cumsum(proportions) * len(indices)).astype(np.int64)[:-1]
                for client_id, chunk in enumerate(np.split(indices, cuts)):
                    parts[client_id].append(chunk)
            merged = [np.concatenate(chunks) for chunks in parts]
            smallest = min(len(p) for p in merged)
            if smallest >= self.min_size:
                return merged
        raise FederatedConfigError(
            f"DirichletPartitioner could not give each of num_clients={self.num_clients} clients at least "
            f"min_size={self.min_size} samples (of {n}) with alpha={self.alpha} in max_retries={self.max_retries} "
            f"draws (smallest client in the last draw: {smallest}); lower num_clients or min_size, raise alpha, "
            "or raise max_retries"
        )
