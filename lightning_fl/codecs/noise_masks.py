"""Masked random noise, the pure math: seeded noise, 1-bit masks, their packing and the server's reconstruction.

Shared by FedMRN's parametrization (:mod:`lightning_fl.algorithms.fedmrn.parametrization`) and
:class:`~lightning_fl.codecs.MaskedNoiseCodec`. Definitions: ALGORITHMS.md section 3.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from lightning_fl.checks import check_choice, check_positive
from lightning_fl.codecs.bitpack import pack_bits, packed_nbytes, unpack_bits
from lightning_fl.exceptions import FederatedConfigError, PayloadError

MaskKind = Literal["binary", "signed"]
NoiseKind = Literal["uniform", "gaussian", "rademacher"]
MASK_KINDS = ("binary", "signed")
NOISE_KINDS = ("uniform", "gaussian", "rademacher")
NOISE_FLOOR = 1e-8


def check_masked_noise(mask: str, noise: str, sigma: float) -> None:
    """Refuse masked-noise settings outside their alphabets (shared by the layer, the callback and the codec).

    Raises:
        FederatedConfigError: Naming the argument, what is allowed and what was given.
    """
    check_choice("mask", mask, MASK_KINDS)
    check_choice("noise", noise, NOISE_KINDS)
    check_positive("sigma", sigma)


def sample_noise(
    shape: torch.Size | tuple[int, ...], seed: int, kind: NoiseKind, sigma: float, device: torch.device | str
) -> torch.Tensor:
    """The noise tensor ``n = sigma * G(seed)``, with ``|n| >= 1e-8`` (sign kept), bit-exact for a seed and device.

    Args:
        shape: Shape of the weight.
        seed: 63-bit seed (per client, round and tensor).
        kind: ``"uniform"`` on (-1, 1), ``"gaussian"`` or ``"rademacher"`` (+-1).
        sigma: Scale, > 0.
        device: Where to draw it; the server regenerates it on the same device type.

    Example:
        >>> n = sample_noise((3, 4), seed=7, kind="uniform", sigma=0.01, device="cpu")
        >>> bool(n.abs().max() <= 0.01), torch.equal(n, sample_noise((3, 4), 7, "uniform", 0.01, "cpu"))
        (True, True)
    """
    if kind not in NOISE_KINDS:
        raise FederatedConfigError(f"noise must be one of {NOISE_KINDS}, got {kind!r}")
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    if kind == "uniform":
        g = torch.rand(shape, generator=gen, device=device).mul_(2).sub_(1)
    elif kind == "gaussian":
        g = torch.randn(shape, generator=gen, device=device)
    else:
        g = torch.randint(0, 2, shape, generator=gen, device=device, dtype=torch.float32).mul_(2).sub_(1)
    n = g.mul_(sigma)
    small = n.abs() < NOISE_FLOOR
    return torch.where(small, torch.where(n < 0, -NOISE_FLOOR, NOISE_FLOOR), n)


def continuous_update(u: torch.Tensor, noise: torch.Tensor, kind: MaskKind) -> torch.Tensor:
    """``n * clip(u / n, 0, 1)`` (binary) or ``n * clip(u / n, -1, 1)`` (signed): the mean of the masked noise."""
    low = 0.0 if kind == "binary" else -1.0
    return noise * (u / noise).clamp(low, 1.0)


def sample_mask(
    u: torch.Tensor, noise: torch.Tensor, kind: MaskKind, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Stochastic rounding of ``u / n`` to a mask in {0, 1} (binary) or {-1, +1} (signed).

    ``E[n * m] = continuous_update(u, n, kind)``.

    Example:
        >>> u, n = torch.zeros(5), torch.full((5,), 0.01)
        >>> sample_mask(u, n, "binary").tolist()  # u = 0 gives an all-zero binary mask
        [0.0, 0.0, 0.0, 0.0, 0.0]
    """
    xi = torch.rand(u.shape, generator=generator, device=u.device, dtype=u.dtype)
    ratio = u / noise
    if kind == "binary":
        return torch.floor(ratio + xi).clamp_(0, 1)
    return torch.floor((ratio + 1) / 2 + xi).clamp_(0, 1).mul_(2).sub_(1)


def pack_mask(mask: torch.Tensor, kind: MaskKind) -> torch.Tensor:
    """1 bit per element, exactly ``ceil(d / 8)`` bytes (signed masks store (m + 1) / 2).

    Example:
        >>> pack_mask(torch.tensor([1.0, 0, 0, 1, 1, 0, 0, 0, 1]), "binary").numel()
        2
    """
    bits = mask.reshape(-1) if kind == "binary" else (mask.reshape(-1) + 1) / 2
    return pack_bits(bits.to(torch.int64), 1)


def reconstruct_update(
    packed: torch.Tensor,
    seed: int,
    shape: torch.Size | tuple[int, ...],
    kind: MaskKind,
    noise: NoiseKind,
    sigma: float,
    device: torch.device | str,
) -> torch.Tensor:
    """The server's side: ``n(seed) * m`` from a packed mask and the seed.

    Raises:
        PayloadError: If ``packed`` does not hold exactly ``ceil(d / 8)`` bytes for ``shape``.
    """
    d = math.prod(shape)
    if packed.numel() != packed_nbytes(d, 1):
        raise PayloadError(
            f"a packed mask for shape {tuple(shape)} must hold {packed_nbytes(d, 1)} bytes, got {packed.numel()}"
        )
    bits = unpack_bits(packed.to(device), 1, d).to(torch.float32).reshape(shape)
    mask = bits if kind == "binary" else bits * 2 - 1
    return sample_noise(shape, seed, noise, sigma, device) * mask
