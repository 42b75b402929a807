"""Base class of the partitioners: who holds which training samples."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from lightning_fl.checks import check_int
from lightning_fl.datamodules.client_indices import ClientIndices
from lightning_fl.exceptions import FederatedConfigError


def _fingerprint(array: np.ndarray | None) -> tuple[Any, ...] | None:
    """A hashable summary of an array's contents, used as the cache key."""
    if array is None:
        return None
    if array.dtype == object:
        return (len(array), hash(tuple(array.tolist())))
    return (array.dtype.str, array.shape, hash(array.tobytes()))


class Partitioner(ABC):
    """Splits the indices of a dataset into one index array per client.

    A partitioner is configured with its arguments (including an explicit ``seed``), computes the assignment
    once from the labels (and, for natural partitions, per-sample group keys) and caches it. Randomness only
    comes from ``numpy.random.default_rng(seed)``, never from global state.

    Subclasses check their own arguments in ``__init__`` and implement :meth:`_assign`. A partitioner that does
    not look at labels sets ``needs_labels = False``: the data module then never reads the dataset's labels, so
    datasets without class labels (language models, dict samples) work with it.

    Args:
        num_clients: Number of clients, at least 1. ``None`` only for partitioners that derive it from the data.
        seed: Seed of the assignment.

    Raises:
        FederatedConfigError: If ``num_clients`` is not an integer >= 1 (or ``None``).

    Example:
        >>> from lightning_fl.datamodules.partitioners import IIDPartitioner
        >>> parts = IIDPartitioner(num_clients=2, seed=0).partition(np.array([0, 1, 0, 1, 1]))
        >>> sorted(np.concatenate(parts).tolist())
        [0, 1, 2, 3, 4]
    """

    needs_labels: ClassVar[bool] = True

    def __init__(self, num_clients: int | None, seed: int = 0) -> None:
        self.num_clients = None if num_clients is None else check_int("num_clients", num_clients, low=1)
        self.seed = check_int("seed", seed, low=0)
        self._cache: ClientIndices | None = None
        self._cache_key: tuple[Any, ...] | None = None

    def partition(
        self, labels: np.ndarray | None, groups: np.ndarray | None = None, num_samples: int | None = None
    ) -> ClientIndices:
        """Return one sorted ``int64`` index array per client; every sample appears exactly once.

        The result is computed on the first call and cached; later calls with the same inputs return the cached
        result. It reads like a list of arrays (``parts[client_id]``, ``len(parts)``, iteration) but is stored flat:
        one concatenated index array and the clients' offsets, whatever the number of clients.

        Args:
            labels: Class label of every sample, shape (N,); ``None`` for a partitioner that needs no labels
                (``needs_labels`` is ``False``: IID, quantity skew, natural), which then never reads any.
            groups: Optional per-sample natural client key (writer, user), shape (N,), used by natural partitioners.
            num_samples: N, needed only when neither ``labels`` nor ``groups`` is given.

        Returns:
            One sorted ``int64`` index array per client, as a :class:`ClientIndices`.

        Raises:
            FederatedConfigError: If the data cannot be split as configured (for example more clients than samples),
                if ``labels``/``groups`` have the wrong shape, or if a partitioner that needs labels gets none.
        """
        labels, groups, n = self._checked_inputs(labels, groups, num_samples)
        key = (n, _fingerprint(labels), _fingerprint(groups))
        if self._cache is None or self._cache_key != key:
            if self.num_clients is not None and self.num_clients > n:
                raise FederatedConfigError(
                    f"num_clients must be at most the number of training samples ({n}), got {self.num_clients}"
                )
            rng = np.random.default_rng(self.seed)
            parts = self._assign(n, labels, groups, rng)
            flat = parts if isinstance(parts, ClientIndices) else ClientIndices.from_arrays(parts)
            del parts  # the per-client arrays go before the sort allocates its key
            self._cache = flat.sorted()
            self._cache_key = key
        return self._cache

    def _checked_inputs(
        self, labels: np.ndarray | None, groups: np.ndarray | None, num_samples: int | None
    ) -> tuple[np.ndarray | None, np.ndarray | None, int]:
        """``labels`` and ``groups`` as arrays of one entry per sample, and the number of samples."""
        if labels is None and self.needs_labels:
            raise FederatedConfigError(
                f"{type(self).__name__} needs the class label of every sample, got labels=None; give the dataset a "
                "`targets` attribute or FederatedDataModule(label_fn=...), or use a partitioner that needs no labels "
                "(IIDPartitioner, QuantitySkewPartitioner, NaturalPartitioner)"
            )
        shapes = []
        if labels is not None:
            labels = np.asarray(labels)
            if labels.ndim != 1:
                raise FederatedConfigError(
                    f"labels must be a 1-D array with one entry per sample, got shape {labels.shape}"
                )
            shapes.append(("labels", labels.shape[0]))
        if groups is not None:
            groups = np.asarray(groups)
            if groups.ndim != 1 or (labels is not None and groups.shape != labels.shape):
                expected = f"shape {labels.shape}" if labels is not None else "a 1-D array"
                raise FederatedConfigError(
                    f"groups must have one entry per sample, {expected}, got shape {groups.shape}"
                )
            shapes.append(("groups", groups.shape[0]))
        if num_samples is not None:
            shapes.append(("num_samples", check_int("num_samples", num_samples, low=0)))
        if not shapes:
            raise FederatedConfigError("partition() needs labels, groups or num_samples to know the number of samples")
        if len({size for _, size in shapes}) > 1:
            raise FederatedConfigError(
                "labels, groups and num_samples must agree on the number of samples, got "
                + ", ".join(f"{name}: {size}" for name, size in shapes)
            )
        return labels, groups, shapes[0][1]

    def _check_min_size(self, num_samples: int, min_size: int) -> None:
        """Refuse a minimum client size that the data cannot give every client."""
        assert self.num_clients is not None
        if self.num_clients * min_size > num_samples:
            raise FederatedConfigError(
                f"num_clients * min_size must be at most the number of training samples ({num_samples}), got "
                f"{self.num_clients} * {min_size} = {self.num_clients * min_size}; lower num_clients or min_size"
            )

    @abstractmethod
    def _assign(
        self, num_samples: int, labels: np.ndarray | None, groups: np.ndarray | None, rng: np.random.Generator
    ) -> Sequence[np.ndarray]:
        """Compute the assignment of ``num_samples`` samples (abstract: each partitioner has its own rule): one index
        array per client, in any order within a client (a list, or a :class:`ClientIndices` when it is cheaper).
        ``labels`` is ``None`` only for partitioners with ``needs_labels = False``."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
