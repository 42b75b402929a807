"""Which tensors a codec applies to; the rest travel as raw bytes."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence

import torch

from lightning_fl.checks import check_int, check_strings
from lightning_fl.codecs.base import Codec, Identity

Shape = torch.Size | Sequence[int]
NamedShapes = Mapping[str, torch.Tensor | Shape] | Iterable[tuple[str, torch.Tensor | Shape]]


class TensorPolicy:
    """Decide per named tensor whether the codec applies (otherwise it travels raw through :class:`Identity`).

    A tensor is compressed when it is floating point, has at least ``min_numel`` elements, matches one of the
    ``include`` patterns (when given) and none of the ``exclude`` patterns. Patterns are ``fnmatch`` globs on
    the tensor's name (``"*.bias"``, ``"bn*"``). Biases, norms and integer buffers thus travel as they are.

    Args:
        min_numel: Smallest number of elements worth compressing.
        include: Compress only tensors whose name matches one of these patterns (None: all). One string is one
            pattern (``include="*.weight"``), not a list of characters.
        exclude: Never compress tensors whose name matches one of these patterns (a string is one pattern).

    Raises:
        FederatedConfigError: If ``min_numel`` is not an integer >= 0, or a pattern is not a string.

    Example:
        >>> policy = TensorPolicy(min_numel=1024, exclude=["*.bias"])
        >>> policy.select("fc1.weight", torch.zeros(64, 32)), policy.select("fc1.bias", torch.zeros(2048))
        (True, False)
    """

    def __init__(
        self, min_numel: int = 1024, include: str | list[str] | None = None, exclude: str | list[str] | None = None
    ) -> None:
        self.min_numel = check_int("min_numel", min_numel, low=0)
        self.include = list(check_strings("include", include)) if include is not None else None
        self.exclude = list(check_strings("exclude", exclude))

    def reason(self, name: str, shape: Shape, dtype: torch.dtype | None = None) -> str | None:
        """Why ``name`` travels raw, or None when the codec applies. ``dtype=None`` skips the dtype check."""
        if dtype is not None and not dtype.is_floating_point:
            return f"not floating ({str(dtype).removeprefix('torch.')})"
        numel = math.prod(shape)
        if numel < self.min_numel:
            return f"numel {numel} < min_numel {self.min_numel}"
        if self.include is not None and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return "matches no include pattern"
        for pattern in self.exclude:
            if fnmatch.fnmatchcase(name, pattern):
                return f"excluded by {pattern!r}"
        return None

    def select(self, name: str, tensor: torch.Tensor) -> bool:
        """Whether the codec applies to ``tensor`` named ``name``."""
        return self.reason(name, tensor.shape, tensor.dtype) is None

    def codec_for(self, name: str, tensor: torch.Tensor, codec: Codec) -> Codec:
        """``codec`` when :meth:`select` says so, else :class:`Identity`."""
        return codec if self.select(name, tensor) else _IDENTITY

    def describe(self, named_shapes: NamedShapes) -> str:
        """A table of which tensors are compressed and why the others are not.

        Args:
            named_shapes: Tensor names mapped to tensors (dtype is then checked) or shapes.

        Example:
            >>> print(TensorPolicy(min_numel=100).describe({"w": (10, 20), "b": (10,)}))
            tensor  shape     numel  codec
            w       (10, 20)  200    compressed
            b       (10,)     10     raw: numel 10 < min_numel 100
            compressed 1 of 2 tensors, 200 of 210 elements (95.2%)
        """
        items = named_shapes.items() if isinstance(named_shapes, Mapping) else named_shapes
        rows, total, compressed, count = [], 0, 0, 0
        for name, value in items:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)
            dtype = value.dtype if isinstance(value, torch.Tensor) else None
            why = self.reason(name, shape, dtype)
            numel = math.prod(shape)
            total += numel
            if why is None:
                compressed += numel
                count += 1
            rows.append((name, str(shape), str(numel), "compressed" if why is None else f"raw: {why}"))
        header = ("tensor", "shape", "numel", "codec")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
        lines = ["  ".join([*(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)), r[3]]) for r in [header, *rows]]
        share = 100.0 * compressed / total if total else 0.0
        lines.append(f"compressed {count} of {len(rows)} tensors, {compressed} of {total} elements ({share:.1f}%)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"TensorPolicy(min_numel={self.min_numel}, include={self.include!r}, exclude={self.exclude!r})"


_IDENTITY = Identity()
