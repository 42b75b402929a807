"""scikit-learn's handwritten digits: 1,797 real 8x8 images shipped inside scikit-learn (no download).

Small enough for tests and laptop-scale experiments, real enough that accuracy means something.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from lightning_fl.checks import check_fraction, check_int
from lightning_fl.datamodules.datasets.base import DatasetSource, InMemoryDataset, Splits


def check_val_fraction(val_fraction: float) -> float:
    """Return ``val_fraction`` as a float, or raise unless it is in [0, 1).

    Raises:
        FederatedConfigError: If ``val_fraction`` is outside [0, 1).

    Example:
        >>> check_val_fraction(0.2)
        0.2
        >>> check_val_fraction(1.0)
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.FederatedConfigError: val_fraction must be in [0, 1), got 1.0
    """
    return check_fraction("val_fraction", val_fraction, high_open=True)


def stratified_holdout(
    keys: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and held-out parts, the same fraction from each key.

    For every distinct key (a class label, or a client index), ``round(val_fraction * n_key)`` of its samples,
    drawn at random and never all of them, go to the held-out part.

    Args:
        keys: One key per sample, shape (N,).
        val_fraction: Fraction of each key's samples to hold out, in [0, 1).
        rng: Generator the draw comes from.

    Returns:
        ``(train_indices, val_indices)``, each sorted ascending.

    Example:
        >>> tr, va = stratified_holdout(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0.25, np.random.default_rng(0))
        >>> len(tr), len(va)
        (6, 2)
    """
    val_parts = []
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        n_val = min(round(val_fraction * len(idx)), len(idx) - 1)
        val_parts.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, dtype=np.int64)
    train_mask = np.ones(len(keys), dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


def load_digits_dataset(val_fraction: float = 0.2, seed: int = 0) -> tuple[InMemoryDataset, InMemoryDataset | None]:
    """Load scikit-learn's digits as standardised ``(N, 1, 8, 8)`` float32 images with int64 labels.

    The split is stratified by class and seeded. Pixels are standardised with one global mean and standard
    deviation computed over all pixels of the *training* images (not per pixel: the border pixels of the digits
    are almost always 0, and a per-pixel std would blow up their rare non-zero values).

    Args:
        val_fraction: Fraction of each class held out for validation, in [0, 1). With 0 there is no val set.
        seed: Seed of the split.

    Returns:
        ``(train, val)``; ``val`` is ``None`` when ``val_fraction == 0``.

    Raises:
        FederatedConfigError: If ``val_fraction`` is outside [0, 1).

    Example:
        >>> train, val = load_digits_dataset(val_fraction=0.2, seed=0)
        >>> len(train) + len(val), tuple(train.tensors[0].shape[1:]), train.targets.dtype
        (1797, (1, 8, 8), torch.int64)
    """
    check_val_fraction(val_fraction)
    check_int("seed", seed, low=0)
    bunch = load_digits()
    images = np.asarray(bunch.data, dtype=np.float64).reshape(-1, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    if val_fraction > 0:
        train_idx, val_idx = stratified_holdout(labels, val_fraction, np.random.default_rng(seed))
    else:
        train_idx, val_idx = np.arange(len(labels)), np.zeros(0, dtype=np.int64)
    mean = images[train_idx].mean()
    std = images[train_idx].std()

    def _subset(idx: np.ndarray) -> InMemoryDataset:
        x = torch.from_numpy(((images[idx] - mean) / std).astype(np.float32))
        return InMemoryDataset(x, torch.from_numpy(labels[idx]))

    return _subset(train_idx), (_subset(val_idx) if len(val_idx) else None)


class Digits(DatasetSource):
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), split into train and validation.

    See :func:`load_digits_dataset` for the split and the standardisation. There is no natural client key
    (``groups`` is ``None``): partition the training set with a partitioner.

    Args:
        val_fraction: Fraction of each class held out for validation, in [0, 1). With 0 there is no val set.
        seed: Seed of the split.

    Raises:
        FederatedConfigError: If ``val_fraction`` is outside [0, 1).

    Example:
        >>> splits = Digits(val_fraction=0.25, seed=1).load()
        >>> len(splits.train), len(splits.val), splits.test
        (1347, 450, None)
    """

    def __init__(self, val_fraction: float = 0.2, seed: int = 0) -> None:
        self.val_fraction = check_val_fraction(val_fraction)
        self.seed = check_int("seed", seed, low=0)

    def load(self) -> Splits:
        """Load the digits; see :func:`load_digits_dataset`."""
        train, val = load_digits_dataset(self.val_fraction, self.seed)
        return Splits(train=train, val=val)
