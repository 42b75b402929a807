"""Chain composition: payload sizes in closed form, stage seeds, declared properties, misuse."""

from __future__ import annotations

import math

import pytest
import torch
from codec_threads import single_thread  # noqa: F401 - fixture

from lightning_fl.codecs import (
    Chain,
    Float16,
    Kashin,
    RandomHadamard,
    SignCompressor,
    StochasticQuantizer,
    Subsample,
    TopK,
)
from lightning_fl.exceptions import FederatedConfigError, PayloadError

pytestmark = pytest.mark.usefixtures("single_thread")

META_1D, META_2D, SEED = 6, 10, 8


def test_caldas_downlink_size_is_closed_form():
    """4-bit quantization of N = 2048 Kashin coefficients for d = 1000; header: meta + seed + lo, hi."""
    payload = Chain(Kashin(), StochasticQuantizer(bits=4)).encode(torch.randn(1000), seed=0)
    assert payload.body.numel() == math.ceil(2048 * 4 / 8)
    assert len(payload.header) == META_1D + SEED + 8


def test_caldas_uplink_size_is_closed_form():
    """Rotation to n = 2048, keep m of them (count in the header), 2 bits each."""
    payload = Chain(RandomHadamard(), Subsample(0.25), StochasticQuantizer(bits=2)).encode(torch.randn(30, 40), 0)
    kept = int.from_bytes(payload.header[META_2D + SEED : META_2D + SEED + 4], "little")
    assert abs(kept - 512) < 5 * math.sqrt(2048 * 0.25 * 0.75)
    assert payload.body.numel() == math.ceil(kept * 2 / 8)
    assert len(payload.header) == META_2D + SEED + 4 + 8


@pytest.mark.parametrize(
    ("codec", "body", "header"),
    [
        (StochasticQuantizer(bits=8), 1000, META_1D + 8),
        (TopK(0.01), 10 * (4 + 2), META_1D),
        (Chain(RandomHadamard(), SignCompressor()), 1024 // 8, META_1D + SEED + 4),
        (Chain(RandomHadamard(), Float16()), 1024 * 2, META_1D + SEED),
        (Chain(TopK(0.01), StochasticQuantizer(bits=4)), 5 + 10 * 2, META_1D + 8),
    ],
)
def test_other_sizes_are_closed_form(codec, body, header):
    payload = codec.encode(torch.randn(1000), seed=0)
    assert (payload.body.numel(), len(payload.header)) == (body, header)


def test_stage_alone_equals_chain_of_one():
    x = torch.randn(100)
    assert Chain(RandomHadamard()).encode(x, 5).body.tolist() == RandomHadamard().encode(x, 5).body.tolist()


def test_each_stage_gets_its_own_seed():
    """Two rotations in a row with the same signs would undo into a plain Hadamard pair; they must differ."""
    x = torch.randn(64)
    twice = Chain(RandomHadamard(), RandomHadamard())
    torch.testing.assert_close(twice.decode(twice.encode(x, 3)), x, rtol=0, atol=1e-5)
    once = RandomHadamard().encode(x, 3).body.view(torch.float32)
    assert not torch.allclose(twice.encode(x, 3).body.view(torch.float32), once)


def test_properties_derive_from_stages():
    assert Chain(RandomHadamard(), Kashin()).lossless
    assert Chain(RandomHadamard(), Subsample(0.5), StochasticQuantizer(bits=2)).unbiased
    assert not Chain(RandomHadamard(), StochasticQuantizer(bits=2)).lossless
    assert not Chain(RandomHadamard(), SignCompressor()).unbiased
    assert not Chain(Kashin(lossless=False), StochasticQuantizer(bits=2)).unbiased


def test_parameters_are_part_of_the_name():
    x = torch.randn(100)
    payload = Chain(Kashin(), StochasticQuantizer(bits=2)).encode(x, 0)
    with pytest.raises(PayloadError, match="cannot decode"):
        Chain(Kashin(), StochasticQuantizer(bits=4)).decode(payload)


def test_nested_chains_flatten():
    inner = Chain(RandomHadamard(), Subsample(0.5))
    assert (
        Chain(inner, StochasticQuantizer(bits=2)).name
        == Chain(RandomHadamard(), Subsample(0.5), StochasticQuantizer(bits=2)).name
    )


@pytest.mark.parametrize(
    ("stages", "match"),
    [
        ((), "at least one stage"),
        ((StochasticQuantizer(bits=2), RandomHadamard()), "must be the last stage"),
        ((RandomHadamard(), "kashin"), "codec stages"),
    ],
)
def test_misuse(stages, match):
    with pytest.raises(FederatedConfigError, match=match):
        Chain(*stages)
