"""Seeded random numbers on the tensor's device, drawn 64 bits at a time.

``torch.rand`` and ``torch.randint`` call the generator once per element; drawing full-range 64-bit words
and viewing them as bytes or 32-bit lanes gives the same quality at a fraction of the cost on CPU. Streams
depend on the device type (CPU and CUDA generators differ), so a payload must be decoded on the device type
that encoded it.
"""

from __future__ import annotations

import torch

_INT64_MIN = -(1 << 63)
_MANTISSA = 0x007FFFFF
_ONE_BITS = 0x3F800000  # float32 1.0


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (an integer in ``[0, 2**64)``)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def random_words(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` int64 words with all 64 bits uniform."""
    return torch.empty(n, dtype=torch.int64, device=device).random_(_INT64_MIN, None, generator=gen)


def random_int8(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` uniform int8 values (the sign bit is a fair coin)."""
    return random_words((n + 7) // 8, gen, device).view(torch.int8)[:n]


def random_signs(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` independent fair signs as a float32 tensor of +1.0 and -1.0."""
    return (random_int8(n, gen, device) >> 7).bitwise_or_(1).to(torch.float32)


def uniform(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` float32 values uniform on the grid ``{k / 2**23 : 0 <= k < 2**23}`` (so ``P(u < p) = ceil(p 2^23)/2^23``).

    Built from random mantissa bits: ``(bits & 0x7FFFFF) | bits(1.0)`` is uniform in [1, 2); subtracting 1 is exact.
    """
    lanes = random_words((n + 1) // 2, gen, device).view(torch.int32)[:n]
    lanes.bitwise_and_(_MANTISSA).bitwise_or_(_ONE_BITS)
    return lanes.view(torch.float32).sub_(1.0)
