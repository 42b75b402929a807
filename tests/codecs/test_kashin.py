"""Kashin representation."""

from __future__ import annotations

import math

import pytest
import torch
from codec_threads import single_thread  # noqa: F401 - fixture

from lightning_fl.codecs import Chain, Kashin, RandomHadamard, StochasticQuantizer, fwht
from lightning_fl.codecs._rng import random_signs, seeded_generator
from lightning_fl.codecs.stage import stage_seed
from lightning_fl.exceptions import FederatedConfigError

pytestmark = pytest.mark.usefixtures("single_thread")


def _coefficients(codec, x, seed=0):
    return codec.encode(x, seed).body.view(torch.float32)


def _literal(x, seed, lossless, iters=3, eta=0.9, delta=1.0):
    """ALGORITHMS.md section 2 word for word, in float64, with N-length transforms."""
    d, size = x.numel(), Kashin().frame_size(x.numel())
    signs = random_signs(d, seeded_generator(stage_seed(seed, 0), x.device), x.device).double()
    x = x.double()

    def frame(v):
        return fwht(torch.cat([v * signs, torch.zeros(size - d, dtype=torch.float64)]))

    def adjoint(a):
        return fwht(a)[:d] * signs

    a, r, level = torch.zeros(size, dtype=torch.float64), x.clone(), x.norm().item() / math.sqrt(delta * d)
    for _ in range(iters - 1):
        b = frame(r).clamp(-level, level)
        a, r, level = a + b, r - adjoint(b), level * eta
    last = frame(r)
    return a + (last if lossless else last.clamp(-level, level))


def _spike(d=1000, at=3, height=100.0):
    x = torch.randn(d, generator=torch.Generator().manual_seed(0)) * 0.01
    x[at] = height
    return x


@pytest.mark.parametrize(("d", "frame"), [(1, 2), (100, 128), (108, 128), (109, 256), (1000, 2048), (1024, 2048)])
def test_frame_size_doubles_above_the_redundancy_threshold(d, frame):
    assert Kashin().frame_size(d) == frame
    assert _coefficients(Kashin(), torch.randn(d)).numel() == frame


@pytest.mark.parametrize("d", [1, 37, 1000, 5000])
def test_lossless_when_last_pass_is_not_clipped(d):
    codec = Kashin()
    x = torch.randn(d) * 5
    torch.testing.assert_close(codec.decode(codec.encode(x, seed=1)), x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("d", [1, 5, 100, 120, 1000, 1024])
@pytest.mark.parametrize("lossless", [True, False])
def test_matches_the_literal_definition(d, lossless):
    x = torch.randn(d)
    coefficients = _coefficients(Kashin(lossless=lossless), x, seed=3).double()
    torch.testing.assert_close(coefficients, _literal(x, 3, lossless), rtol=0, atol=1e-5)


def test_doubled_frame_repeats_the_half_length_coefficients():
    """H_2n [u; 0] = [H_n u; H_n u] / sqrt(2): doubling N (as in TF-MOT) repeats every coefficient."""
    coefficients = _coefficients(Kashin(), torch.randn(1000))
    assert torch.equal(coefficients[:1024], coefficients[1024:])


def test_coefficients_are_flatter_than_plain_hadamard_on_a_spike():
    x = _spike()
    assert _coefficients(Kashin(), x).abs().max() < 0.8 * _coefficients(RandomHadamard(), x).abs().max()


def test_zero_gives_zero():
    codec = Kashin()
    payload = codec.encode(torch.zeros(300), seed=0)
    assert torch.count_nonzero(payload.body) == 0
    assert torch.equal(codec.decode(payload), torch.zeros(300))


def test_clipped_last_pass_is_bounded_and_declared_lossy():
    codec = Kashin(lossless=False)
    assert not codec.lossless and not codec.unbiased
    x = _spike()
    level = torch.linalg.vector_norm(x) / 1000**0.5 * 0.9**2
    assert _coefficients(codec, x).abs().max() <= level * (1 + 1e-6)


def test_kashin_then_coarse_quantization_beats_plain_quantization_on_spiky_input():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    x[[10, 200, 300, 400, 500]] = torch.tensor([30.0, -30.0, 25.0, -28.0, 30.0])
    plain, kashin = StochasticQuantizer(bits=2), Chain(Kashin(), StochasticQuantizer(bits=2))

    def error(codec):
        return sum(torch.linalg.vector_norm(codec.decode(codec.encode(x, seed)) - x) for seed in range(5))

    assert error(kashin) < 0.5 * error(plain)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"iters": 0}, "iters"),
        ({"eta": 0.0}, "eta"),
        ({"delta": -1.0}, "delta"),
        ({"redundancy_threshold": 2}, "redun"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(FederatedConfigError, match=match):
        Kashin(**kwargs)
