"""Quantity-skew partition: log-normal client sizes, IID samples."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from lightning_fl.checks import check_int, check_non_negative
from lightning_fl.datamodules.partitioners.base import Partitioner


def lognormal_sizes(total: int, num_clients: int, sigma: float, min_size: int, rng: np.random.Generator) -> np.ndarray:
    """Client sizes proportional to log-normal(0, sigma) weights, each ``>= min_size``, summing to ``total``.

    Every client first gets ``min_size`` samples; the rest is shared in proportion to the weights and rounded
    by the largest-remainder method, so the sum is exact.

    Args:
        total: Number of samples N.
        num_clients: Number of clients.
        sigma: Standard deviation of the underlying normal; 0 gives equal sizes (up to rounding).
        min_size: Fewest samples per client; ``num_clients * min_size <= total``.
        rng: Source of randomness.

    Returns:
        ``int64`` array of shape (num_clients,) summing to ``total``.

    Example:
        >>> sizes = lognormal_sizes(100, 4, sigma=1.0, min_size=5, rng=np.random.default_rng(0))
        >>> int(sizes.sum()), bool(sizes.min() >= 5)
        (100, True)
    """
    log_weights = rng.normal(loc=0.0, scale=sigma, size=num_clients)
    weights = np.exp(log_weights - log_weights.max())  # log-normal weights, scaled so that large sigma cannot overflow
    share = weights / weights.sum() * (total - num_clients * min_size)
    extra = np.floor(share).astype(np.int64)
    leftover = total - num_clients * min_size - int(extra.sum())
    extra[np.argsort(extra - share, kind="stable")[:leftover]] += 1
    return extra + min_size


class QuantitySkewPartitioner(Partitioner):
    """Quantity skew: client sizes follow a log-normal distribution, samples are assigned uniformly at random.

    Sizes are drawn as ``log-normal(0, sigma)`` weights normalised to the number of samples N, with every client
    holding at least ``min_size`` samples and the sizes summing to exactly N. Label distributions match the
    global one in expectation; only the amount of data differs, and the spread grows with ``sigma``.

    Args:
        num_clients: Number of clients, at least 1.
        sigma: Standard deviation of the log of the client sizes, a finite number >= 0 (0 gives an IID split).
        seed: Seed of the sizes and the assignment.
        min_size: Fewest samples any client may hold, at least 0; ``num_clients * min_size`` must not exceed N.

    Raises:
        FederatedConfigError: If an argument is invalid.

    Example:
        >>> parts = QuantitySkewPartitioner(num_clients=3, sigma=1.0, seed=0).partition(np.zeros(30, dtype=int))
        >>> sum(len(p) for p in parts), min(len(p) for p in parts) >= 1
        (30, True)
    """

    needs_labels: ClassVar[bool] = False

    def __init__(self, num_clients: int, sigma: float = 1.0, seed: int = 0, min_size: int = 1) -> None:
        super().__init__(num_clients, seed)
        self.sigma = check_non_negative("sigma", sigma)
        self.min_size = check_int("min_size", min_size, low=0)

    def _assign(
        self, num_samples: int, labels: np.ndarray | None, groups: np.ndarray | None, rng: np.random.Generator
    ) -> list[np.ndarray]:
        assert self.num_clients is not None
        n = num_samples
        self._check_min_size(n, self.min_size)
        sizes = lognormal_sizes(n, self.num_clients, self.sigma, self.min_size, rng)
        return np.split(rng.permutation(n), np.cumsum(sizes)[:-1])
