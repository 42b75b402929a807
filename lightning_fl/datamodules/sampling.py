"""Who trains in a round: the clients sampled from ``(seed, round_idx)``, identically on every rank.

Sampling costs O(clients_per_round) whatever the number of clients: uniform sampling is numpy's ``choice`` without
replacement (Floyd's algorithm for a small sample of a large population), and size-proportional sampling searches
a CDF computed once (:func:`size_cdf`) with the draws numpy's ``choice`` would make, so it picks the same clients.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.seeding import derive_seed

ClientSampling = Literal["uniform", "all", "size"]
CLIENT_SAMPLING_MODES = ("uniform", "all", "size")


def sample_clients(
    round_idx: int,
    sizes: np.ndarray,
    clients_per_round: int,
    mode: ClientSampling,
    seed: int,
    *,
    cdf: np.ndarray | None = None,
) -> np.ndarray:
    """Choose the clients of a round, identically on every rank.

    Args:
        round_idx: 0-based round.
        sizes: Number of training samples of every client.
        clients_per_round: How many clients to sample (ignored by ``"all"``).
        mode: ``"uniform"`` (without replacement), ``"all"`` (every client) or ``"size"`` (without replacement,
            with probability proportional to client size).
        seed: Base seed; the round's randomness is ``derive_seed(seed, "sample", round_idx)``.
        cdf: ``size_cdf(sizes)`` when the caller keeps it: ``"size"`` sampling then costs O(clients_per_round *
            log(num_clients)) instead of O(num_clients), with the same clients.

    Returns:
        The sorted client ids of the round. Uniform sampling costs O(clients_per_round) (numpy's ``choice`` without
        replacement uses Floyd's algorithm for a small sample of a large population).

    Example:
        >>> sample_clients(0, np.array([5, 5, 5, 5]), 2, "uniform", seed=0).tolist() == \
            sample_clients(0, np.array([5, 5, 5, 5]), 2, "uniform", seed=0).tolist()
        True
        >>> sample_clients(3, np.array([5, 5, 5]), 2, "all", seed=0).tolist()
        [0, 1, 2]
    """
    num_clients = len(sizes)
    if mode == "all":
        return np.arange(num_clients, dtype=np.int64)
    if mode not in CLIENT_SAMPLING_MODES:
        raise FederatedConfigError(f"client_sampling must be one of {CLIENT_SAMPLING_MODES}, got {mode!r}")
    if not 1 <= clients_per_round <= num_clients:
        raise FederatedConfigError(
            f"clients_per_round must be in [1, num_clients={num_clients}], got {clients_per_round}"
        )
    round_seed = derive_seed(seed, "sample", round_idx)
    if mode == "size" and cdf is not None:
        chosen = _size_sample(round_seed, cdf, clients_per_round)
        if chosen is not None:
            return chosen
    rng = np.random.default_rng(round_seed)
    p = None if mode == "uniform" else sizes / sizes.sum()
    chosen = rng.choice(num_clients, size=clients_per_round, replace=False, p=p)
    return np.sort(chosen.astype(np.int64))


def _size_sample(round_seed: int, cdf: np.ndarray, clients_per_round: int) -> np.ndarray | None:
    """The sorted clients that ``choice(n, k, replace=False, p)`` picks from ``default_rng(round_seed)`` when its
    first ``k`` draws are distinct (it then returns them, searched in the CDF that :func:`size_cdf` computes); ``None``
    when two draws hit one client (numpy then zeroes their probabilities and draws again over a new CDF of all
    clients: the caller runs numpy's own call, rarely, since a repeat has odds of about k^2 * sum(p^2) / 2)."""
    draws = np.random.default_rng(round_seed).random(clients_per_round)
    chosen = np.sort(cdf.searchsorted(draws, side="right").astype(np.int64))
    if len(chosen) > 1 and np.any(chosen[1:] == chosen[:-1]):
        return None
    return chosen


def size_cdf(sizes: np.ndarray) -> np.ndarray:
    """The cumulative distribution over clients proportional to their sizes, computed exactly as
    ``numpy.random.Generator.choice(n, k, replace=False, p=sizes / sizes.sum())`` computes it before its first draw,
    so a search in it picks the same clients as that call.

    Example:
        >>> size_cdf(np.array([1, 1, 2])).tolist()
        [0.25, 0.5, 1.0]
    """
    p = np.asarray(sizes) / np.asarray(sizes).sum()
    cdf = np.cumsum(p.astype(np.float64, copy=False))
    cdf /= cdf[-1]
    return cdf
