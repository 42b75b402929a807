"""FedMRN's masked random noise (Li et al., ACM MM 2024): a weight becomes ``W_frozen + n * m(u)``.

The client keeps ``W`` frozen and learns a latent ``u`` (reset to zero every round) that chooses, through a 1-bit
mask ``m``, which entries of a seeded noise tensor ``n`` form its update. Only the packed mask and a seed travel
to the server, which regenerates ``n`` bit for bit. Definitions: ALGORITHMS.md section 3.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_fl.checks import check_bool
from lightning_fl.codecs.noise_masks import (
    NOISE_FLOOR,
    MaskKind,
    NoiseKind,
    check_masked_noise,
    continuous_update,
    sample_mask,
    sample_noise,
)
from lightning_fl.exceptions import FederatedConfigError

__all__ = ["MaskedNoise"]


class MaskedNoise(nn.Module):
    """A parametrization of a weight: ``W_eff = W + n * m(u)``, with ``u`` the only trainable tensor.

    With progressive stochastic masking (PSM), at local step ``t`` of ``T`` each element uses the sampled masked
    noise with probability ``p_t = t / T`` and the continuous ``n * clip(u / n)`` otherwise; without it every
    element is sampled (``p = 1``). The gradient reaching ``u`` is the gradient of ``W_eff`` (straight-through).

    Args:
        shape: Shape of the weight.
        mask: ``"binary"`` or ``"signed"``.
        noise: ``"uniform"``, ``"gaussian"`` or ``"rademacher"``.
        sigma: Noise scale (published defaults: 0.01 binary, 0.005 signed).
        progressive: Use PSM.

    Example:
        >>> layer = nn.Linear(4, 3)
        >>> mn = MaskedNoise(layer.weight.shape)
        >>> torch.nn.utils.parametrize.register_parametrization(layer, "weight", mn)
        ParametrizedLinear(...)
        >>> mn.start_round(seed=1, total_steps=10)
        >>> torch.equal(layer.weight, layer.parametrizations.weight.original)  # u = 0, binary: no change
        True
    """

    def __init__(
        self,
        shape: torch.Size | tuple[int, ...],
        mask: MaskKind = "binary",
        noise: NoiseKind = "uniform",
        sigma: float = 0.01,
        progressive: bool = True,
    ) -> None:
        super().__init__()
        check_masked_noise(mask, noise, sigma)
        self.mask_kind: MaskKind = mask
        self.noise_kind: NoiseKind = noise
        self.sigma = float(sigma)
        self.progressive = check_bool("progressive", progressive)
        self.u = nn.Parameter(torch.zeros(shape))
        self.register_buffer("noise", torch.full(tuple(shape), NOISE_FLOOR), persistent=False)
        self.noise_seed = 0
        self.step = 0
        self.total_steps = 1

    @property
    def progress(self) -> float:
        """``p_t = t / T`` for the current local step (1.0 without PSM)."""
        if not self.progressive:
            return 1.0
        return min(1.0, (self.step + 1) / self.total_steps)

    @torch.no_grad()
    def start_round(self, seed: int, total_steps: int) -> None:
        """Reset ``u`` to zero, draw this round's noise from ``seed``, and set the PSM horizon ``T``."""
        if total_steps < 1:
            raise FederatedConfigError(f"total_steps must be >= 1, got {total_steps}")
        self.u.zero_()
        self.noise_seed = seed
        self.noise = sample_noise(self.u.shape, seed, self.noise_kind, self.sigma, self.u.device)
        self.step = 0
        self.total_steps = total_steps

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        u = self.u
        noise = self.noise.to(u.dtype)
        sampled = noise * sample_mask(u.detach(), noise, self.mask_kind)
        p = self.progress
        if p < 1.0:
            keep = torch.rand(u.shape, device=u.device) < p
            delta = torch.where(keep, sampled, continuous_update(u.detach(), noise, self.mask_kind))
        else:
            delta = sampled
        # straight-through: the value is delta, the gradient flows to u unchanged
        return weight + (u + (delta - u).detach()).to(weight.dtype)

    @torch.no_grad()
    def upload_mask(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh mask sample (not the last forward pass's) for the upload."""
        return sample_mask(self.u, self.noise, self.mask_kind, generator)
