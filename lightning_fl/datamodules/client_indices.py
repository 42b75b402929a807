"""Every client's sample indices in one flat array: memory of the indices plus 16 bytes a client (offsets, sizes).

A list of one numpy array per client costs about 100 bytes of Python object per client on top of the indices (270
MiB for a million clients holding 30 MiB of indices). :class:`ClientIndices` keeps one concatenated ``int64`` array
and the offsets where each client's part starts, and reads like that list: ``indices[client_id]`` is the client's
index array (a view), ``len(indices)`` the number of clients, iteration yields the clients in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from itertools import pairwise
from typing import overload

import numpy as np

from lightning_fl.datamodules.sampling import size_cdf
from lightning_fl.exceptions import FederatedConfigError


class ClientIndices(Sequence[np.ndarray]):
    """The sample indices of every client, stored flat.

    Args:
        flat: Every client's indices, client after client (converted to ``int64``).
        offsets: Where each client's part starts in ``flat``, and ``len(flat)`` last: ``num_clients + 1``
            non-decreasing entries from 0.

    Raises:
        FederatedConfigError: If ``offsets`` does not delimit ``flat`` as described.

    Example:
        >>> ix = ClientIndices.from_arrays([np.array([3, 5]), np.array([], dtype=np.int64), np.array([1])])
        >>> len(ix), ix[0].tolist(), ix[-1].tolist(), ix.sizes.tolist()
        (3, [3, 5], [1], [2, 0, 1])
        >>> [a.tolist() for a in ix]
        [[3, 5], [], [1]]
    """

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        flat = np.ascontiguousarray(flat, dtype=np.int64).reshape(-1)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1)
        if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
            raise FederatedConfigError(
                f"offsets must be num_clients + 1 non-decreasing entries from 0 to len(flat)={len(flat)}, got "
                f"{len(offsets)} entries from {offsets[:1].tolist()} to {offsets[-1:].tolist()}"
            )
        self.flat = flat
        self.offsets = offsets

    @classmethod
    def from_arrays(cls, arrays: Iterable[np.ndarray]) -> ClientIndices:
        """The flat form of one index array per client.

        Example:
            >>> ClientIndices.from_arrays([np.array([2]), np.array([0, 1])]).offsets.tolist()
            [0, 1, 3]
        """
        parts = list(arrays)
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)), out=offsets[1:])
        flat = np.concatenate(parts).astype(np.int64, copy=False) if parts else np.empty(0, dtype=np.int64)
        return cls(flat, offsets)

    def sorted(self) -> ClientIndices:
        """The same clients, each client's indices sorted (one sort of all indices, no loop over the clients).

        Example:
            >>> [a.tolist() for a in ClientIndices(np.array([5, 1, 3, 0]), np.array([0, 3, 4])).sorted()]
            [[1, 3, 5], [0]]
        """
        flat, span = self.flat, int(self.flat.max(initial=0)) + 1
        if len(flat) and flat.min() >= 0 and span * len(self) < 2**62:  # one sort of client * span + index, in place
            key = np.repeat(np.arange(len(self), dtype=np.int64) * span, self.sizes)
            key += flat
            key.sort()
            key -= np.repeat(np.arange(len(self), dtype=np.int64) * span, self.sizes)
            return ClientIndices(key, self.offsets.copy())
        owner = np.repeat(np.arange(len(self), dtype=np.int64), self.sizes)
        return ClientIndices(flat[np.lexsort((flat, owner))], self.offsets.copy())

    @classmethod
    def empty(cls, num_clients: int) -> ClientIndices:
        """``num_clients`` clients without any index (a partition without local validation samples).

        Example:
            >>> ClientIndices.empty(2).sizes.tolist()
            [0, 0]
        """
        return cls(np.empty(0, dtype=np.int64), np.zeros(num_clients + 1, dtype=np.int64))

    @cached_property
    def sizes(self) -> np.ndarray:
        """How many indices every client holds (computed once)."""
        return np.diff(self.offsets)

    @cached_property
    def sampling_cdf(self) -> np.ndarray:
        """:func:`size_cdf` of the clients' sizes, for size-proportional client sampling (computed once)."""
        return size_cdf(self.sizes)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        position = int(index)
        if position < 0:
            position += n
        if not 0 <= position < n:
            raise IndexError(f"client id must be in [{-n}, {n - 1}], got {index}")
        return self.flat[self.offsets[position] : self.offsets[position + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        flat, offsets = self.flat, self.offsets.tolist()
        for start, end in pairwise(offsets):
            yield flat[start:end]

    def __repr__(self) -> str:
        return f"ClientIndices(num_clients={len(self)}, num_indices={len(self.flat)})"


def client_sizes_of(indices: Sequence[np.ndarray]) -> np.ndarray:
    """How many indices every client holds: read from the offsets of a :class:`ClientIndices`, else counted.

    Example:
        >>> client_sizes_of([np.arange(3), np.arange(1)]).tolist()
        [3, 1]
    """
    if isinstance(indices, ClientIndices):
        return indices.sizes
    return np.fromiter((len(ix) for ix in indices), dtype=np.int64, count=len(indices))
