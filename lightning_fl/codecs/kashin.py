"""Kashin representation (Lyubarskii and Vershynin 2010) over a randomized Hadamard tight frame."""

from __future__ import annotations

import math

import torch

from lightning_fl.checks import check_bool, check_fraction, check_int, check_positive
from lightning_fl.codecs._rng import random_signs, seeded_generator
from lightning_fl.codecs.hadamard import fwht, next_power_of_two
from lightning_fl.codecs.stage import WORK_DTYPE, StageContext, StageLayout, StageOutput, TransformStage


class Kashin(TransformStage):
    """Represent ``x`` (length d) by N > d frame coefficients of small, even magnitude.

    The frame is ``F(x) = H_N pad(x * D)`` with random signs ``D`` from the seed and the normalised Hadamard
    transform ``H_N``; ``F* F = I``. Starting from ``a = 0``, ``r = x``, ``M = ||x|| / sqrt(delta * d)``, each of
    ``iters - 1`` passes clips ``b = clip(F(r), -M, M)``, adds it to ``a``, removes ``F*(b)`` from ``r`` and
    shrinks ``M`` by ``eta``. The last pass adds ``F(r)`` unclipped (``lossless=True``: ``F*(a) == x`` up to
    float rounding, unbiased after an unbiased quantizer) or clipped (lossy, biased, bounded dynamic range).
    ``N`` is the next power of two of ``d``, doubled when ``d / N > redundancy_threshold``, so quantizing the
    coefficients with q bits costs ``q * N / d`` bits per original coordinate (between 1.18 q and 2.35 q).
    Payload: N coefficients and the 8-byte seed.

    When N is doubled, ``H_N [u; 0] = [H u; H u] / sqrt(2)``: the frame holds every vector twice and the
    second half of the coefficients repeats the first (TensorFlow Model Optimization's Kashin stage, which this
    definition follows, behaves the same). The encoder exploits it: ``2 * iters - 1`` transforms of length
    ``next_power_of_two(d)``, not N; the decoder sums the halves and needs one. A stochastic quantizer then
    rounds the two copies independently, so the doubled bits buy half the variance of one copy, no more; a
    ``redundancy_threshold`` of 1 turns doubling off.

    Args:
        redundancy_threshold: Double N when d / N exceeds this, in (0, 1].
        iters: Number of passes, at least 1.
        eta: Clip level shrink factor per pass, in (0, 1].
        delta: Sets the first clip level ``||x|| / sqrt(delta * d)``; positive.
        lossless: Leave the last pass unclipped (exact round trip).

    Raises:
        FederatedConfigError: If an argument is out of range.

    Example:
        >>> codec = Kashin()
        >>> x = torch.zeros(100)
        >>> x[3] = 10.0
        >>> p = codec.encode(x, seed=0)
        >>> p.body.numel() // 4, torch.allclose(codec.decode(p), x, atol=1e-5)
        (128, True)
    """

    needs_seed = True

    def __init__(
        self,
        redundancy_threshold: float = 0.85,
        iters: int = 3,
        eta: float = 0.9,
        delta: float = 1.0,
        lossless: bool = True,
    ) -> None:
        self.redundancy_threshold = check_fraction("redundancy_threshold", redundancy_threshold, low_open=True)
        self.iters = check_int("iters", iters, low=1)
        self.eta = check_fraction("eta", eta, low_open=True)
        self.delta = check_positive("delta", delta)
        self.lossless = self.unbiased = check_bool("lossless", lossless)

    def _repr_args(self) -> dict[str, object]:
        return {
            "redundancy_threshold": self.redundancy_threshold,
            "iters": self.iters,
            "eta": self.eta,
            "delta": self.delta,
            "lossless": self.lossless,
        }

    def frame_size(self, numel: int) -> int:
        """Number of coefficients N for a tensor of ``numel`` elements."""
        size = next_power_of_two(numel)
        return 2 * size if numel / size > self.redundancy_threshold else size

    def forward(self, x: torch.Tensor, seed: int) -> StageOutput:
        d, half = x.numel(), next_power_of_two(x.numel())
        copies = self.frame_size(d) // half  # 1, or 2 when the frame was doubled
        signs = random_signs(d, seeded_generator(seed, x.device), x.device)
        residual = torch.zeros(half, dtype=WORK_DTYPE, device=x.device)  # pad(r * D) to the half length
        torch.mul(x, signs, out=residual[:d])
        level = torch.linalg.vector_norm(x).item() / math.sqrt(self.delta * max(d, 1))
        # With N = 2 * half, H_N [u; 0] = [H u; H u] / sqrt(2): every coefficient vector of the iteration is one
        # half-length vector repeated, and F*(repeat(b)) = sqrt(copies) * D * (H b)[:d]. Work on one copy.
        forward_scale, backward_scale = 1.0 / math.sqrt(copies), math.sqrt(copies)
        coefficients = None
        for _ in range(self.iters - 1):
            clipped = fwht(residual).mul_(forward_scale).clamp_(-level, level)
            if coefficients is None:
                coefficients = clipped
                back = fwht(clipped)  # D cancels: the residual is kept multiplied by D
            else:
                coefficients.add_(clipped)
                back = fwht(clipped, overwrite=True)
            residual[:d].sub_(back[:d], alpha=backward_scale)
            level *= self.eta
        last = fwht(residual, overwrite=True).mul_(forward_scale)
        if not self.lossless:
            last.clamp_(-level, level)
        coefficients = last if coefficients is None else coefficients.add_(last)
        if copies == 1:
            return StageOutput(coefficients)
        frame = torch.empty((copies, half), dtype=WORK_DTYPE, device=x.device)
        frame.copy_(coefficients.expand(copies, half))
        return StageOutput(frame.view(-1))

    def layout(self, numel: int, dtype: torch.dtype, header: bytes) -> StageLayout:
        return StageLayout(self.frame_size(numel))

    def inverse(self, y: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        d, half = ctx.numel, next_power_of_two(ctx.numel)
        copies = y.numel() // half
        folded = y.to(WORK_DTYPE).view(copies, half).sum(0) if copies > 1 else y.to(WORK_DTYPE)
        signs = random_signs(d, seeded_generator(ctx.seed, y.device), y.device)
        # F*(a) = (H_N a)[:d] * D, and the first half of H_N a is H_half(a_1 + a_2) / sqrt(2).
        out = fwht(folded, overwrite=copies > 1 or ctx.writable)[:d].mul_(signs)
        return out.mul_(1.0 / math.sqrt(copies)) if copies > 1 else out
