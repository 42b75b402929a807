"""Seeded random subsampling: keep each coordinate with probability ``fraction``, send only the kept values."""

from __future__ import annotations

import math
import struct

import torch

from lightning_fl.checks import check_fraction
from lightning_fl.codecs._rng import seeded_generator, uniform
from lightning_fl.codecs.stage import WORK_DTYPE, StageContext, StageLayout, StageOutput, TransformStage
from lightning_fl.exceptions import PayloadError

_COUNT = struct.Struct("<I")


def bernoulli_positions(numel: int, fraction: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Sorted positions of an i.i.d. Bernoulli(``fraction``) mask over ``numel`` coordinates.

    Drawn as geometric gaps between kept coordinates (``1 + floor(log(1 - u) / log(1 - fraction))``), so the
    cost is proportional to the number of kept coordinates and no ``numel``-long mask is compacted.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> bernoulli_positions(10, 1.0, gen, torch.device("cpu")).tolist()
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    if fraction >= 1.0:
        return torch.arange(numel, device=device)
    log_keep_gap = math.log1p(-fraction)
    spread = math.sqrt(numel * fraction * (1.0 - fraction))
    chunk = int(numel * fraction + 6.0 * spread + 16.0)
    pieces, last = [], -1
    while last < numel:  # one pass except with probability ~1e-9
        gaps = torch.log1p(uniform(chunk, gen, device).neg_()).div_(log_keep_gap).floor_().add_(1.0)
        steps = gaps.to(torch.int64).cumsum_(0).add_(last)
        pieces.append(steps)
        last = int(steps[-1].item())
        chunk = max(1024, chunk // 8)
    positions = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    count = int(torch.searchsorted(positions, numel).item())
    return positions[:count]


class Subsample(TransformStage):
    """Keep each coordinate with probability ``fraction`` (mask drawn from the seed) and scale it by 1/fraction.

    Only the kept values travel, plus the 8-byte seed and a 4-byte count; the receiver rebuilds the mask
    from the seed and puts zeros elsewhere. Unbiased; decoding is linear. Because the mask comes from the
    device's generator, decode on the same device type that encoded.

    Args:
        fraction: Probability of keeping a coordinate, in (0, 1].

    Raises:
        FederatedConfigError: If ``fraction`` is not in (0, 1].

    Example:
        >>> codec = Subsample(0.5)
        >>> p = codec.encode(torch.ones(1000), seed=3)
        >>> kept = (p.body.numel() // 4)
        >>> 400 < kept < 600, codec.decode(p).unique().tolist()
        (True, [0.0, 2.0])
    """

    unbiased = True
    needs_seed = True
    header_size = _COUNT.size

    def __init__(self, fraction: float = 0.25) -> None:
        self.fraction = check_fraction("fraction", fraction, low_open=True)
        self.lossless = self.fraction == 1.0

    def _repr_args(self) -> dict[str, object]:
        return {"fraction": self.fraction}

    def forward(self, x: torch.Tensor, seed: int) -> StageOutput:
        positions = bernoulli_positions(x.numel(), self.fraction, seeded_generator(seed, x.device), x.device)
        kept = x.index_select(0, positions).div_(self.fraction)
        return StageOutput(kept, _COUNT.pack(positions.numel()))

    def layout(self, numel: int, dtype: torch.dtype, header: bytes) -> StageLayout:
        (count,) = _COUNT.unpack(header)
        spread = 10.0 * math.sqrt(numel * self.fraction * (1.0 - self.fraction)) + 10.0
        if count > numel or abs(count - numel * self.fraction) > spread:
            raise PayloadError(
                f"{self.name} payload keeps {count} of {numel} coordinates, impossible for fraction {self.fraction}"
            )
        return StageLayout(count)

    def inverse(self, y: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        positions = bernoulli_positions(ctx.numel, self.fraction, seeded_generator(ctx.seed, y.device), y.device)
        if positions.numel() != y.numel():
            raise PayloadError(
                f"{self.name}: the mask rebuilt from the seed keeps {positions.numel()} coordinates but the payload "
                f"holds {y.numel()} (wrong seed, or encoded on another device type?)"
            )
        out = torch.zeros(ctx.numel, dtype=WORK_DTYPE, device=y.device)
        return out.index_copy_(0, positions, y.to(WORK_DTYPE))
