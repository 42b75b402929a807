"""Fast Walsh-Hadamard transform and the randomized Hadamard rotation stage.

The transform never builds the ``n x n`` matrix. Butterflies are fused by radix: ``H_n`` is the Kronecker
product of small normalised Sylvester blocks ``H_r`` (r <= 16), and each block is applied to one axis of the
reshaped vector with a GEMM, so the cost is O(n log n) with ``log_r n`` passes instead of ``log_2 n``. For
``n > 2**17`` the rows of length ``2**17`` are transformed one at a time while they sit in cache, then the
remaining axis is transformed with one GEMM per radix (radix 16). Matmuls run at full float32 precision even when the
caller allowed TF32 or bfloat16 (``torch.set_float32_matmul_precision``).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import torch

from lightning_fl.codecs._rng import random_signs, seeded_generator
from lightning_fl.codecs.stage import WORK_DTYPE, StageContext, StageLayout, StageOutput, TransformStage
from lightning_fl.exceptions import FederatedConfigError

_BLOCK_BITS = 17  # rows of 2**17 floats are transformed while they sit in cache
_ROW_RADIX_BITS = 4  # 16 x 16 GEMMs inside a row
_AXIS_RADIX_BITS = 4  # 16 x 16 GEMMs across rows


def next_power_of_two(n: int) -> int:
    """Smallest power of two >= ``n`` (1 for ``n <= 1``)."""
    return 1 << max(0, (n - 1).bit_length())


@functools.lru_cache(maxsize=64)
def _kernel(bits: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised Sylvester block ``H_{2**bits} / sqrt(2**bits)`` (at most 16 x 16)."""
    h = torch.ones(1, 1, dtype=torch.float64)
    for _ in range(bits):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h / math.sqrt(h.shape[0])).to(dtype=dtype, device=device)


def _radices(bits: int, max_bits: int) -> list[int]:
    """Split ``bits`` into as few near-equal parts of at most ``max_bits`` as possible."""
    if bits == 0:
        return []
    parts = math.ceil(bits / max_bits)
    base, extra = divmod(bits, parts)
    return [base + (i < extra) for i in range(parts)]


@contextlib.contextmanager
def _ieee_matmul() -> Iterator[None]:
    previous = torch.get_float32_matmul_precision()
    if previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _transform_row(src: torch.Tensor, dst: torch.Tensor, temps: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Write the normalised transform of 1-D ``src`` into ``dst``.

    Each pass applies ``H_r`` to the last axis and rotates that axis to the front
    (``out[r, n/r] = H_r @ in[n/r, r]^T``); after one pass per radix the axes are back in order.
    """
    n = src.numel()
    radices = _radices(n.bit_length() - 1, _ROW_RADIX_BITS)
    current = src
    for j, bits in enumerate(radices):
        r = 1 << bits
        target = dst if j == len(radices) - 1 else temps[j % 2]
        torch.mm(_kernel(bits, src.dtype, src.device), current.view(n // r, r).T, out=target.view(r, n // r))
        current = target


def fwht(x: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """Normalised fast Walsh-Hadamard transform (Sylvester order) of a 1-D tensor whose length is a power of 2.

    The transform is orthogonal and its own inverse: ``fwht(fwht(x)) == x`` up to float rounding.

    Args:
        x: 1-D floating tensor of length ``2**m``.
        overwrite: Allow using ``x`` as scratch space (saves one allocation); ``x`` is then clobbered.

    Returns:
        ``H x / sqrt(n)`` as a new tensor (or in ``x``'s memory when ``overwrite``), on ``x``'s device.

    Raises:
        FederatedConfigError: If ``x`` is not 1-D or its length is not a power of two.

    Example:
        >>> fwht(torch.tensor([1.0, 0.0, 0.0, 0.0])).tolist()
        [0.5, 0.5, 0.5, 0.5]
    """
    n = x.numel()
    if x.dim() != 1 or n == 0 or n & (n - 1):
        raise FederatedConfigError(f"fwht needs a 1-D tensor whose length is a power of two, got {tuple(x.shape)}")
    x = x.contiguous()
    if n == 1:
        return x if overwrite else x.clone()
    with _ieee_matmul():
        block = min(n, 1 << _BLOCK_BITS)
        temps = (torch.empty(block, dtype=x.dtype, device=x.device), torch.empty(block, dtype=x.dtype, device=x.device))
        out = torch.empty_like(x)
        rows = n // block
        for i in range(rows):
            _transform_row(x[i * block : (i + 1) * block], out[i * block : (i + 1) * block], temps)
        if rows == 1:
            return out
        scratch = x if overwrite else torch.empty_like(x)
        pre = 1
        for bits in _radices(rows.bit_length() - 1, _AXIS_RADIX_BITS):
            r = 1 << bits
            post = n // (pre * r)
            kernel = _kernel(bits, x.dtype, x.device)
            if pre == 1:
                torch.mm(kernel, out.view(r, post), out=scratch.view(r, post))
            else:
                torch.bmm(kernel.expand(pre, r, r), out.view(pre, r, post), out=scratch.view(pre, r, post))
            out, scratch = scratch, out
            pre *= r
        return out


class RandomHadamard(TransformStage):
    """Randomized Hadamard rotation: random signs from the seed, zero-pad to a power of two, normalised FWHT.

    Orthogonal, so norms are kept and the round trip is exact up to float32 rounding (``lossless``); its
    decoder is linear, so chains that are unbiased after it stay unbiased. Spreads a spiky vector evenly over
    ``n = next_power_of_two(d)`` coordinates, which is what makes coarse quantization after it lose less.
    Payload cost: ``n`` coefficients (padding included) and the 8-byte seed.

    Example:
        >>> codec = RandomHadamard()
        >>> x = torch.randn(5)
        >>> y = codec.decode(codec.encode(x, seed=7))
        >>> torch.allclose(x, y, atol=1e-6)
        True
    """

    lossless = True
    unbiased = True
    needs_seed = True

    def forward(self, x: torch.Tensor, seed: int) -> StageOutput:
        d = x.numel()
        signs = random_signs(d, seeded_generator(seed, x.device), x.device)
        padded = torch.zeros(next_power_of_two(d), dtype=WORK_DTYPE, device=x.device)
        torch.mul(x, signs, out=padded[:d])
        return StageOutput(fwht(padded, overwrite=True))

    def layout(self, numel: int, dtype: torch.dtype, header: bytes) -> StageLayout:
        return StageLayout(next_power_of_two(numel))

    def inverse(self, y: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        d = ctx.numel
        signs = random_signs(d, seeded_generator(ctx.seed, y.device), y.device)
        return fwht(y.to(WORK_DTYPE), overwrite=ctx.writable)[:d].mul_(signs)
