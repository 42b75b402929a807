"""Stochastic uniform quantization and sign compression."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_fl.codecs import SignCompressor, StochasticQuantizer, unpack_bits
from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError


def _codes(codec: StochasticQuantizer, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return unpack_bits(codec.encode(x, seed).body, codec.bits, x.numel())


def test_unbiased_over_many_seeds_within_the_variance_bound():
    """E[x'] = x; the bound comes from Var[x'] <= step**2 / 4 per draw."""
    codec, seeds = StochasticQuantizer(bits=3), 400
    x = torch.randn(50, generator=torch.Generator().manual_seed(0))
    mean = torch.stack([codec.decode(codec.encode(x, seed)) for seed in range(seeds)]).mean(0)
    step = (x.max() - x.min()) / codec.levels
    assert torch.all((mean - x).abs() <= 5 * (step / 2) / math.sqrt(seeds))


def test_rounding_probabilities_are_not_swapped():
    """A value 10% above the bottom of its bin rounds up with probability 0.1 (0.9 if swapped)."""
    codec = StochasticQuantizer(bits=2)  # lo 0, hi 3: levels 0, 1, 2, 3
    x = torch.cat([torch.tensor([0.0, 3.0]), torch.full((20_000,), 1.1)])
    decoded = codec.decode(codec.encode(x, seed=5))[2:]
    assert abs(decoded.mean().item() - 1.1) < 5 * math.sqrt(0.1 * 0.9 / 20_000)
    assert set(decoded.unique().tolist()) == {1.0, 2.0}


@pytest.mark.parametrize("bits", [1, 2, 5, 8, 16])
def test_codes_cover_exactly_zero_to_two_to_the_q_minus_one(bits):
    codec = StochasticQuantizer(bits=bits, deterministic=True)
    x = torch.linspace(-2.0, 7.0, 5000)
    codes = _codes(codec, x)
    assert codes.min() == 0 and codes.max() == (1 << bits) - 1
    stochastic = _codes(StochasticQuantizer(bits=bits), torch.randn(5000))
    assert stochastic.min() >= 0 and stochastic.max() <= (1 << bits) - 1


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("deterministic", [True, False])
def test_extremes_decode_exactly(bits, deterministic):
    """Fails for a quantizer that divides by 2**q: its top level would be (2**q - 1) / 2**q of the range."""
    codec = StochasticQuantizer(bits=bits, deterministic=deterministic)
    x = torch.tensor([-0.1, 0.3, 0.123, 0.2999, -0.0999])
    y = codec.decode(codec.encode(x, seed=1))
    assert y[0] == x[0] and y[1] == x[1]


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_deterministic_mode_is_within_half_a_step(bits):
    codec = StochasticQuantizer(bits=bits, deterministic=True)
    x = torch.randn(1000)
    step = (x.max() - x.min()) / codec.levels
    assert torch.all((codec.decode(codec.encode(x, seed=0)) - x).abs() <= step / 2 * (1 + 1e-5))
    assert not codec.unbiased and StochasticQuantizer(bits=bits).unbiased


@pytest.mark.parametrize("value", [0.0, -3.25, 1e-30, 7e5])
def test_constant_tensor_decodes_exactly(value):
    codec = StochasticQuantizer(bits=3)
    x = torch.full((5, 7), value)
    assert torch.equal(codec.decode(codec.encode(x, seed=0)), x)


@pytest.mark.parametrize("bits", [1, 4, 7, 16])
def test_payload_is_packed_codes_plus_lo_and_hi(bits):
    payload = StochasticQuantizer(bits=bits).encode(torch.randn(1001), seed=0)
    assert payload.body.numel() == math.ceil(1001 * bits / 8)
    assert len(payload.header) == 6 + 8  # meta (dtype, ndim, one dim) + float32 lo, hi


def test_non_finite_input_is_refused():
    with pytest.raises(FederatedRuntimeError, match="NaN or infinity"):
        StochasticQuantizer(bits=4).encode(torch.tensor([1.0, float("nan")]), seed=0)


@pytest.mark.parametrize("bits", [0, 17, True])
def test_bad_bits(bits):
    with pytest.raises(FederatedConfigError, match=r"bits must be an integer in \[1, 16\]"):
        StochasticQuantizer(bits=bits)


def test_sign_scale_is_mean_magnitude_and_minimises_the_error():
    codec = SignCompressor()
    x = torch.randn(999)
    y = codec.decode(codec.encode(x, seed=0))
    scale = x.abs().mean()
    torch.testing.assert_close(y.abs(), torch.full_like(x, scale.item()))
    assert torch.equal(torch.sign(y), torch.where(x >= 0, 1.0, -1.0))
    best = torch.linalg.vector_norm(x - y)
    for factor in (0.95, 1.05):
        assert best < torch.linalg.vector_norm(x - factor * y)


def test_sign_payload_is_one_bit_per_element_plus_scale():
    payload = SignCompressor().encode(torch.randn(1001), seed=0)
    assert payload.body.numel() == 126 and len(payload.header) == 6 + 4
