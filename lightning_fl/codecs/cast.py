"""Casting stages: send floats as float16 or bfloat16 (2 bytes per element instead of 4)."""

from __future__ import annotations

import torch

from lightning_fl.codecs.stage import WORK_DTYPE, StageContext, StageLayout, StageOutput, TransformStage
from lightning_fl.exceptions import FederatedConfigError

_CASTS = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class Cast(TransformStage):
    """Round every element to ``dtype`` (round to nearest even); the decoder casts back.

    Lossy and biased (deterministic rounding) unless the input already is ``dtype``. float16 saturates at
    +-65504 instead of overflowing to infinity. Payload: 2 bytes per element for the 16-bit types.

    Args:
        dtype: ``"float16"``, ``"bfloat16"`` or ``"float32"`` (or the matching ``torch.dtype``).

    Raises:
        FederatedConfigError: If ``dtype`` is none of those.

    Example:
        >>> codec = Cast("bfloat16")
        >>> p = codec.encode(torch.tensor([1.0, 3.0]), seed=0)
        >>> p.body.numel(), codec.decode(p).tolist()
        (4, [1.0, 3.0])
    """

    def __init__(self, dtype: str | torch.dtype = "float16") -> None:
        name = str(dtype).removeprefix("torch.")
        if name not in _CASTS:
            raise FederatedConfigError(f"dtype must be one of {sorted(_CASTS)}, got {dtype!r}")
        self.dtype = _CASTS[name]
        self.lossless = self.unbiased = self.dtype == WORK_DTYPE

    def _repr_args(self) -> dict[str, object]:
        return {"dtype": str(self.dtype).removeprefix("torch.")}

    def forward(self, x: torch.Tensor, seed: int) -> StageOutput:
        if self.dtype == torch.float16:
            finite = torch.finfo(torch.float16).max
            x = x.clamp(-finite, finite)
        return StageOutput(x.to(self.dtype))

    def layout(self, numel: int, dtype: torch.dtype, header: bytes) -> StageLayout:
        return StageLayout(numel, self.dtype)

    def inverse(self, y: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return y.to(WORK_DTYPE)


class Float16(Cast):
    """:class:`Cast` to float16.

    Example:
        >>> Float16().encode(torch.zeros(3), seed=0).body.numel()
        6
    """

    def __init__(self) -> None:
        super().__init__("float16")

    def _repr_args(self) -> dict[str, object]:
        return {}


class BFloat16(Cast):
    """:class:`Cast` to bfloat16.

    Example:
        >>> BFloat16().encode(torch.zeros(3), seed=0).body.numel()
        6
    """

    def __init__(self) -> None:
        super().__init__("bfloat16")

    def _repr_args(self) -> dict[str, object]:
        return {}
