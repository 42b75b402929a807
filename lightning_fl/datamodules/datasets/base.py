"""In-memory datasets and dataset sources.

A *dataset source* is a small configurable object (typed ``__init__``, so LightningCLI can build it from YAML)
whose :meth:`DatasetSource.load` returns the train, validation and test datasets. In-memory data is held in
:class:`InMemoryDataset`, which the federated loader indexes in whole batches (no per-sample collation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset


class InMemoryDataset(TensorDataset):
    """A ``TensorDataset`` of ``(inputs, labels)`` with ``targets`` and optional per-sample ``groups``.

    Args:
        inputs: Input tensor, first dimension N.
        targets: Integer labels, shape (N,).
        groups: Optional natural client key per sample (writer, user), shape (N,).

    Example:
        >>> ds = InMemoryDataset(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
        >>> len(ds), ds[1][1].item()
        (4, 1)
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, groups: np.ndarray | None = None) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"inputs and targets must have the same length, got {len(inputs)} and {len(targets)}")
        if groups is not None and len(groups) != len(targets):
            raise ValueError(f"groups must have one entry per sample ({len(targets)}), got {len(groups)}")
        super().__init__(inputs, targets)
        self.targets = targets
        self.groups = None if groups is None else np.asarray(groups)


@dataclass(frozen=True)
class Splits:
    """What a :class:`DatasetSource` loads: the training data (partitioned across clients) and held-out sets."""

    train: Dataset
    val: Dataset | None = None
    test: Dataset | None = None


class DatasetSource(ABC):
    """A configurable recipe that loads a dataset's splits from memory or a local directory."""

    @abstractmethod
    def load(self) -> Splits:
        """Load and return the splits (abstract: each source reads its own format)."""
