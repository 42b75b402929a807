"""Sparsifying stages: top-k and magnitude pruning. Both send kept values plus their indices.

Indices travel in the smallest integer type that can address the tensor: 1 byte up to 256 elements, 2 bytes
up to 65,536, 4 bytes up to 2**32, else 8 (stored as uint8 / int16 / int32 / int64 and read back unsigned).
Values go through the next stage (raw float32 by default, or a quantizer), indices travel as extra body bytes.
"""

from __future__ import annotations

import math
import struct
from abc import abstractmethod

import torch

from lightning_fl.checks import check_fraction, check_int
from lightning_fl.codecs.stage import (
    WORK_DTYPE,
    StageContext,
    StageLayout,
    StageOutput,
    TransformStage,
    itemsize,
    view_bytes,
)
from lightning_fl.exceptions import FederatedConfigError, PayloadError

_COUNT = struct.Struct("<I")
_SAMPLE = 1 << 14  # coordinates sampled to guess the selection threshold


def index_dtype(numel: int) -> torch.dtype:
    """Smallest dtype whose bytes, read as unsigned, address ``numel`` coordinates.

    Example:
        >>> [index_dtype(n) for n in (256, 257, 65_536, 65_537)]
        [torch.uint8, torch.int16, torch.int16, torch.int32]
    """
    if numel <= 1 << 8:
        return torch.uint8
    if numel <= 1 << 16:
        return torch.int16
    if numel <= 1 << 32:
        return torch.int32
    return torch.int64


def encode_indices(indices: torch.Tensor, numel: int) -> torch.Tensor:
    """Indices (int64) as bytes of :func:`index_dtype` (values >= 2**15 or 2**31 wrap; read back unsigned)."""
    return indices.to(index_dtype(numel)).view(torch.uint8)


def decode_indices(data: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`encode_indices`.

    Raises:
        PayloadError: On an index outside ``[0, numel)``, or indices that are not strictly increasing (encoders
            send them sorted; a repeated index would make the decoded tensor depend on the order of the writes).
    """
    dtype = index_dtype(numel)
    indices = view_bytes(data, dtype).to(torch.int64)
    if dtype in (torch.int16, torch.int32):
        indices.bitwise_and_((1 << (8 * itemsize(dtype))) - 1)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= numel):
        raise PayloadError(f"payload holds indices outside [0, {numel})")
    if indices.numel() > 1 and not bool((indices[1:] > indices[:-1]).all()):
        raise PayloadError("payload holds indices that are not strictly increasing (repeated or out of order)")
    return indices


def _candidates(magnitude: torch.Tensor, k: int) -> torch.Tensor | None:
    """Sorted indices of a superset of the ``k`` largest entries, or None when a full pass is as cheap.

    The threshold is guessed from a strided sample (a little below the k-th largest), and everything at or
    above it is kept. The result is exact: when fewer than ``k`` entries pass the guess, None is returned.
    """
    numel = magnitude.numel()
    if numel <= 2 * _SAMPLE or 8 * k >= numel:
        return None
    sample = magnitude[:: numel // _SAMPLE]
    expected = k * sample.numel() / numel
    rank = min(sample.numel(), math.ceil(expected + 4.0 * math.sqrt(expected) + 4.0))
    threshold = torch.kthvalue(sample, sample.numel() - rank + 1).values
    candidates = (magnitude >= threshold).nonzero().squeeze(1)
    return candidates if candidates.numel() >= k else None


def top_indices(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted indices of the ``k`` largest entries of ``magnitude`` (ties broken by ``torch.topk``)."""
    if k >= magnitude.numel():
        return torch.arange(magnitude.numel(), device=magnitude.device)
    candidates = _candidates(magnitude, k)
    if candidates is None:
        return torch.topk(magnitude, k, sorted=False).indices.sort().values
    if candidates.numel() == k:
        return candidates
    best = torch.topk(magnitude.index_select(0, candidates), k, sorted=False).indices
    return candidates.index_select(0, best.sort().values)


def threshold_indices(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted indices of every entry at least as large as the k-th largest (ties kept: k or more entries).

    When fewer than ``k`` entries are non-zero, exactly ``k`` are returned as in :func:`top_indices`.
    """
    numel = magnitude.numel()
    if k >= numel or k == 0:
        return top_indices(magnitude, k)
    candidates = _candidates(magnitude, k)
    pool = magnitude if candidates is None else magnitude.index_select(0, candidates)
    threshold = torch.kthvalue(pool, pool.numel() - k + 1).values
    if threshold.item() <= 0:
        return top_indices(magnitude, k)
    keep = (pool >= threshold).nonzero().squeeze(1)
    return keep if candidates is None else candidates.index_select(0, keep)


class _Sparsifier(TransformStage):
    """Shared wire format: kept values (through the next stage) plus their indices as extra body bytes."""

    @abstractmethod
    def _target(self, numel: int) -> int:
        """The number of coordinates to keep out of ``numel``."""

    @abstractmethod
    def _select(self, magnitude: torch.Tensor, k: int) -> torch.Tensor:
        """Sorted int64 indices to keep."""

    @abstractmethod
    def _count(self, numel: int, header: bytes) -> int:
        """Number of kept coordinates announced by ``header`` (validated)."""

    def forward(self, x: torch.Tensor, seed: int) -> StageOutput:
        indices = self._select(x.abs(), self._target(x.numel()))
        header = _COUNT.pack(indices.numel()) if self.header_size else b""
        return StageOutput(x.index_select(0, indices), header, encode_indices(indices, x.numel()))

    def layout(self, numel: int, dtype: torch.dtype, header: bytes) -> StageLayout:
        count = self._count(numel, header)
        return StageLayout(count, WORK_DTYPE, count * itemsize(index_dtype(numel)))

    def inverse(self, y: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        if ctx.extra is None:
            raise PayloadError(f"{self.name} payload carries no indices")
        indices = decode_indices(ctx.extra, ctx.numel)
        out = torch.zeros(ctx.numel, dtype=WORK_DTYPE, device=y.device)
        return out.index_copy_(0, indices, y.to(WORK_DTYPE))


class TopK(_Sparsifier):
    """Keep the ``k`` entries of largest magnitude (``k`` given, or ``round(fraction * d)``, at least 1).

    Biased (use :class:`~lightning_fl.codecs.error_feedback.ErrorFeedback`). Payload: ``k`` values (4 bytes
    each unless quantized after) plus ``k`` indices of :func:`index_dtype` bytes; no header of its own.

    Args:
        fraction: Fraction of entries to keep, in (0, 1].
        k: Number of entries to keep (at least 1); give ``fraction`` or ``k``, not both.

    Raises:
        FederatedConfigError: If neither or both are given, or a value is out of range.

    Example:
        >>> codec = TopK(k=2)
        >>> codec.decode(codec.encode(torch.tensor([0.1, -3.0, 0.2, 2.0]), seed=0)).tolist()
        [0.0, -3.0, 0.0, 2.0]
    """

    def __init__(self, fraction: float | None = None, k: int | None = None) -> None:
        if (fraction is None) == (k is None):
            raise FederatedConfigError(f"give exactly one of fraction and k, got fraction={fraction!r}, k={k!r}")
        self.fraction = None if fraction is None else check_fraction("fraction", fraction, low_open=True)
        self.k = None if k is None else check_int("k", k, low=1)
        self.lossless = self.unbiased = self.fraction == 1.0

    def _repr_args(self) -> dict[str, object]:
        return {"fraction": self.fraction} if self.k is None else {"k": self.k}

    def _target(self, numel: int) -> int:
        if self.fraction is None:
            return min(self.k or 0, numel)
        return min(numel, max(1, round(self.fraction * numel))) if numel else 0

    def _select(self, magnitude: torch.Tensor, k: int) -> torch.Tensor:
        return top_indices(magnitude, k)

    def _count(self, numel: int, header: bytes) -> int:
        return self._target(numel)


class MagnitudePrune(_Sparsifier):
    """Keep every entry whose magnitude reaches the threshold that leaves ``density`` of the entries.

    The threshold is the magnitude of the ``round(density * d)``-th largest entry; entries tied with it are
    kept too, so slightly more than the target may travel (the count is sent: 4 header bytes). Same wire
    format as :class:`TopK` otherwise. Biased.

    Args:
        density: Target fraction of entries kept, in (0, 1].

    Raises:
        FederatedConfigError: If ``density`` is not in (0, 1].

    Example:
        >>> codec = MagnitudePrune(density=0.5)
        >>> codec.decode(codec.encode(torch.tensor([1.0, -2.0, 2.0, 0.5]), seed=0)).tolist()
        [0.0, -2.0, 2.0, 0.0]
    """

    header_size = _COUNT.size

    def __init__(self, density: float = 0.1) -> None:
        self.density = check_fraction("density", density, low_open=True)
        self.lossless = self.unbiased = self.density == 1.0

    def _repr_args(self) -> dict[str, object]:
        return {"density": self.density}

    def _target(self, numel: int) -> int:
        return min(numel, max(1, round(self.density * numel))) if numel else 0

    def _select(self, magnitude: torch.Tensor, k: int) -> torch.Tensor:
        return threshold_indices(magnitude, k)

    def _count(self, numel: int, header: bytes) -> int:
        (count,) = _COUNT.unpack(header)
        if not self._target(numel) <= count <= numel:
            raise PayloadError(
                f"{self.name} payload keeps {count} of {numel} entries; expected between {self._target(numel)} "
                f"and {numel}"
            )
        return count
