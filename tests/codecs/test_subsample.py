"""Seeded random subsampling."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_fl.codecs import Subsample
from lightning_fl.codecs.base import Payload
from lightning_fl.exceptions import FederatedConfigError, PayloadError


def test_unbiased_over_many_seeds():
    codec, seeds, fraction = Subsample(0.25), 600, 0.25
    x = torch.randn(100, generator=torch.Generator().manual_seed(2))
    mean = torch.stack([codec.decode(codec.encode(x, seed)) for seed in range(seeds)]).mean(0)
    standard_error = x.abs() * math.sqrt((1 - fraction) / fraction) / math.sqrt(seeds)
    assert torch.all((mean - x).abs() <= 5 * standard_error + 1e-6)


def test_keep_rate_matches_fraction():
    kept = (Subsample(0.1).decode(Subsample(0.1).encode(torch.ones(100_000), seed=1)) != 0).float().mean()
    assert abs(kept.item() - 0.1) < 5 * math.sqrt(0.1 * 0.9 / 100_000)


def test_same_seed_same_mask_different_seed_different_mask():
    codec = Subsample(0.5)
    x = torch.ones(1000)

    def mask(seed):
        return codec.decode(codec.encode(x, seed)) != 0

    assert torch.equal(mask(3), mask(3))
    assert not torch.equal(mask(3), mask(4))


def test_body_holds_only_the_kept_values_scaled():
    codec = Subsample(0.25)
    x = torch.rand(4000) + 1.0  # no zeros, so the decoded support is the mask
    payload = codec.encode(x, seed=9)
    decoded = codec.decode(payload)
    kept = decoded != 0
    assert payload.body.numel() == 4 * int(kept.sum())
    assert len(payload.header) == 6 + 8 + 4  # meta, seed, count
    torch.testing.assert_close(payload.body.view(torch.float32), x[kept] / 0.25)
    torch.testing.assert_close(decoded[kept], x[kept] / 0.25)


def test_wrong_seed_is_caught():
    codec = Subsample(0.5)
    payload = codec.encode(torch.ones(1000), seed=1)
    other = codec.encode(torch.ones(1000), seed=2)
    if other.body.numel() != payload.body.numel():
        header = payload.header[:6] + other.header[6:14] + payload.header[14:]
        with pytest.raises(PayloadError, match="mask rebuilt from the seed"):
            codec.decode(Payload(payload.codec, header, payload.body))


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1])
def test_bad_fraction(fraction):
    with pytest.raises(FederatedConfigError, match="fraction"):
        Subsample(fraction)
