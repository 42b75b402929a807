"""Quantizing terminal stages: stochastic uniform quantization and sign compression, both bit-packed."""

from __future__ import annotations

import math
import struct

import torch

from lightning_fl.checks import check_bool, check_int
from lightning_fl.codecs._rng import seeded_generator, uniform
from lightning_fl.codecs.bitpack import _pack, pack_bits, packed_nbytes, unpack_bits
from lightning_fl.codecs.stage import WORK_DTYPE, StageContext, TerminalStage
from lightning_fl.exceptions import FederatedRuntimeError, PayloadError

_RANGE = struct.Struct("<ff")
_SCALE = struct.Struct("<f")


def _require_finite(name: str, *values: float) -> None:
    if not all(math.isfinite(v) for v in values):
        raise FederatedRuntimeError(f"{name} cannot encode a tensor holding NaN or infinity")


def _full(value: float, like: torch.Tensor) -> torch.Tensor:
    """A 0-dim float32 tensor on ``like``'s device (dividing by it is a true division, not a reciprocal)."""
    return torch.full((), value, dtype=WORK_DTYPE, device=like.device)


class StochasticQuantizer(TerminalStage):
    """Stochastic uniform quantization to ``bits`` bits per element, codes bit-packed.

    With ``lo = min(x)``, ``hi = max(x)`` and ``L = 2**bits - 1``: ``y = (x - lo) / (hi - lo) * L`` and
    ``code = floor(y) + Bernoulli(y - floor(y))``, the coin drawn from the seed. The decoder returns
    ``lo + code / L * (hi - lo)`` (as ``torch.lerp``, so codes 0 and L give ``lo`` and ``hi`` exactly), which
    is unbiased. A constant tensor decodes exactly. ``deterministic=True`` rounds to the nearest level instead
    (biased, error at most half a step). Payload: ``ceil(d * bits / 8)`` bytes plus ``lo`` and ``hi`` as
    float32 (8 header bytes). Coins are compared against uniforms on a 2**-23 grid, so each rounding
    probability is exact to 1.2e-7.

    Args:
        bits: Bits per element, 1 to 16.
        deterministic: Round to nearest instead of stochastic rounding.

    Raises:
        FederatedConfigError: If ``bits`` is not in [1, 16].

    Example:
        >>> codec = StochasticQuantizer(bits=2)
        >>> x = torch.tensor([0.0, 1.0, 2.0, 3.0])
        >>> p = codec.encode(x, seed=0)
        >>> p.body.numel(), codec.decode(p).tolist()
        (1, [0.0, 1.0, 2.0, 3.0])
    """

    header_size = _RANGE.size

    def __init__(self, bits: int = 8, deterministic: bool = False) -> None:
        self.bits = check_int("bits", bits, low=1, high=16)
        self.deterministic = check_bool("deterministic", deterministic)
        self.unbiased = not self.deterministic

    @property
    def levels(self) -> int:
        """Largest code, ``L = 2**bits - 1``."""
        return (1 << self.bits) - 1

    def _repr_args(self) -> dict[str, object]:
        return {"bits": self.bits, "deterministic": True} if self.deterministic else {"bits": self.bits}

    def serialize(self, x: torch.Tensor, seed: int) -> tuple[bytes, torch.Tensor]:
        x = x.to(WORK_DTYPE)
        if x.numel() == 0:
            return _RANGE.pack(0.0, 0.0), torch.empty(0, dtype=torch.uint8, device=x.device)
        lo_t, hi_t = torch.aminmax(x)
        lo, hi = lo_t.item(), hi_t.item()
        _require_finite(self.name, lo, hi)
        if lo == hi:
            return _RANGE.pack(lo, hi), torch.zeros(
                packed_nbytes(x.numel(), self.bits), dtype=torch.uint8, device=x.device
            )
        y = torch.sub(x, lo_t).div_(hi_t - lo_t).mul_(self.levels)  # in [0, L]; exactly L where x == hi
        if self.deterministic:
            codes = y.round_()
        else:
            codes = torch.floor(y)
            frac = y.sub_(codes)
            # ceil(frac - u) is 1 exactly when u < frac (else 0): code = floor(y) + Bernoulli(frac)
            frac.sub_(uniform(x.numel(), seeded_generator(seed, x.device), x.device)).ceil_()
            codes.add_(frac)
        codes = codes.clamp_(max=self.levels).to(torch.int32)
        return _RANGE.pack(lo, hi), _pack(codes, self.bits, masked=True)

    def _range(self, header: bytes) -> tuple[float, float]:
        lo, hi = _RANGE.unpack(header)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise PayloadError(f"{self.name} header holds an impossible range lo={lo}, hi={hi}")
        return lo, hi

    def body_nbytes(self, numel: int, dtype: torch.dtype, header: bytes) -> int:
        self._range(header)
        return packed_nbytes(numel, self.bits)

    def deserialize(self, body: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        lo, hi = self._range(ctx.header)
        codes = unpack_bits(body, self.bits, ctx.numel, dtype=WORK_DTYPE)
        if lo == hi:
            return codes.fill_(lo)
        weight = codes.div_(_full(self.levels, codes))
        return torch.lerp(_full(lo, codes), _full(hi, codes), weight)


class SignCompressor(TerminalStage):
    """One bit per element (the sign) and one float32 scale: ``decode = scale * sign(x)`` (signSGD / DRIVE).

    The scale ``||x||_1 / d`` (the mean magnitude) minimises ``||x - scale * sign(x)||^2``; zeros count as
    positive. Biased and lossy: use it with :class:`~lightning_fl.codecs.error_feedback.ErrorFeedback`, or after
    :class:`~lightning_fl.codecs.hadamard.RandomHadamard` as in DRIVE. Payload: ``ceil(d / 8)`` bytes plus
    4 header bytes.

    Example:
        >>> codec = SignCompressor()
        >>> codec.decode(codec.encode(torch.tensor([1.0, -3.0, 2.0]), seed=0)).tolist()
        [2.0, -2.0, 2.0]
    """

    header_size = _SCALE.size

    def serialize(self, x: torch.Tensor, seed: int) -> tuple[bytes, torch.Tensor]:
        x = x.to(WORK_DTYPE)
        scale = x.abs().mean().item() if x.numel() else 0.0
        _require_finite(self.name, scale)
        return _SCALE.pack(scale), pack_bits(x >= 0, 1)

    def _scale(self, header: bytes) -> float:
        (scale,) = _SCALE.unpack(header)
        if not (math.isfinite(scale) and scale >= 0):
            raise PayloadError(f"{self.name} header holds an impossible scale {scale}")
        return scale

    def body_nbytes(self, numel: int, dtype: torch.dtype, header: bytes) -> int:
        self._scale(header)
        return packed_nbytes(numel, 1)

    def deserialize(self, body: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        scale = self._scale(ctx.header)
        # (2 * bit - 1) * scale is exactly +-scale; bit * (2 * scale) - scale would overflow to NaN above 1.7e38
        return unpack_bits(body, 1, ctx.numel, dtype=WORK_DTYPE).mul_(2).sub_(1).mul_(_full(scale, body))
