"""FedMRN's masked random noise: alphabets, expectations, gradients, the PSM schedule, and reconstruction."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lightning_fl.algorithms.fedmrn.parametrization import MaskedNoise
from lightning_fl.codecs.noise_masks import (
    continuous_update,
    pack_mask,
    reconstruct_update,
    sample_mask,
    sample_noise,
)
from lightning_fl.exceptions import FederatedConfigError, PayloadError


@pytest.mark.parametrize("kind", ["binary", "signed"])
def test_masks_are_exactly_in_their_alphabet(kind):
    u = torch.randn(1000) * 0.02
    n = sample_noise(u.shape, 3, "uniform", 0.01, "cpu")
    m = sample_mask(u, n, kind)
    alphabet = {0.0, 1.0} if kind == "binary" else {-1.0, 1.0}
    assert set(m.unique().tolist()) <= alphabet


@pytest.mark.parametrize("kind", ["binary", "signed"])
def test_mean_of_masked_noise_equals_clipped_continuous_value(kind):
    torch.manual_seed(0)
    u = torch.randn(200) * 0.01
    n = sample_noise(u.shape, 5, "uniform", 0.01, "cpu")
    draws = 20_000
    gen = torch.Generator().manual_seed(1)
    mean = sum(n * sample_mask(u, n, kind, gen) for _ in range(draws)) / draws
    expected = continuous_update(u, n, kind)
    # each draw is bounded by |n| <= 0.01, so the mean's standard error is below 0.01 / sqrt(draws)
    assert (mean - expected).abs().max() < 5 * 0.01 / math.sqrt(draws)


def test_binary_mask_with_zero_latent_gives_an_exactly_zero_update():
    for seed in range(20):
        n = sample_noise((64,), seed, "gaussian", 0.01, "cpu")
        assert torch.count_nonzero(n * sample_mask(torch.zeros(64), n, "binary")) == 0


@pytest.mark.parametrize("noise", ["uniform", "gaussian", "rademacher"])
def test_noise_is_seeded_floored_and_scaled(noise):
    a = sample_noise((1000,), 11, noise, 0.005, "cpu")
    assert torch.equal(a, sample_noise((1000,), 11, noise, 0.005, "cpu"))
    assert not torch.equal(a, sample_noise((1000,), 12, noise, 0.005, "cpu"))
    assert a.abs().min() >= 1e-8
    if noise == "rademacher":
        torch.testing.assert_close(a.abs(), torch.full_like(a, 0.005))


@pytest.mark.parametrize("progressive", [True, False])
def test_gradient_reaching_u_equals_gradient_of_effective_weight(progressive):
    torch.manual_seed(0)
    layer = nn.Linear(5, 4)
    mn = MaskedNoise(layer.weight.shape, progressive=progressive)
    parametrize.register_parametrization(layer, "weight", mn)
    layer.parametrizations.weight.original.requires_grad_(False)
    mn.start_round(seed=3, total_steps=4)
    with torch.no_grad():
        mn.u.copy_(torch.randn_like(mn.u) * 0.01)
    x = torch.randn(8, 5)
    w_eff = layer.weight  # one forward of the parametrization: one mask sample
    (torch.nn.functional.linear(x, w_eff, layer.bias) ** 2).sum().backward()
    # the same loss as a function of a leaf holding that effective weight
    w_leaf = w_eff.detach().clone().requires_grad_(True)
    (torch.nn.functional.linear(x, w_leaf, layer.bias) ** 2).sum().backward()
    assert torch.equal(mn.u.grad, w_leaf.grad)
    assert layer.parametrizations.weight.original.grad is None


def test_psm_schedule_starts_at_one_over_t_and_ends_at_one():
    mn = MaskedNoise((3,), progressive=True)
    mn.start_round(seed=0, total_steps=8)
    schedule = []
    for _ in range(8):
        schedule.append(mn.progress)
        mn.step += 1
    assert schedule[0] == pytest.approx(1 / 8) and schedule[-1] == 1.0
    assert schedule == sorted(schedule)
    assert MaskedNoise((3,), progressive=False).progress == 1.0


def test_start_round_resets_latent_and_redraws_noise():
    mn = MaskedNoise((50,))
    mn.start_round(seed=1, total_steps=2)
    first = mn.noise.clone()
    with torch.no_grad():
        mn.u.fill_(0.3)
    mn.start_round(seed=2, total_steps=2)
    assert torch.count_nonzero(mn.u) == 0 and not torch.equal(first, mn.noise)


@pytest.mark.parametrize("kind", ["binary", "signed"])
@pytest.mark.parametrize("d", [1, 7, 8, 1001])
def test_server_reconstruction_from_packed_mask_and_seed_equals_client_update(kind, d):
    mn = MaskedNoise((d,), mask=kind, sigma=0.005)
    mn.start_round(seed=123, total_steps=1)
    with torch.no_grad():
        mn.u.copy_(torch.randn(d) * 0.004)
    m = mn.upload_mask(torch.Generator().manual_seed(9))
    packed = pack_mask(m, kind)
    assert packed.numel() == math.ceil(d / 8)
    server = reconstruct_update(packed, 123, (d,), kind, "uniform", 0.005, "cpu")
    assert torch.equal(server, mn.noise * m)


def test_wrong_payload_length_and_bad_arguments_raise():
    with pytest.raises(PayloadError, match=r"must hold 2 bytes, got 3"):
        reconstruct_update(torch.zeros(3, dtype=torch.uint8), 0, (16,), "binary", "uniform", 0.01, "cpu")
    with pytest.raises(FederatedConfigError, match="mask must be one of"):
        MaskedNoise((2,), mask="ternary")
    with pytest.raises(FederatedConfigError, match="sigma must be a finite number > 0, got 0"):
        MaskedNoise((2,), sigma=0)
    with pytest.raises(FederatedConfigError, match="noise must be one of"):
        sample_noise((2,), 0, "laplace", 0.1, "cpu")


@pytest.mark.parametrize("kind", ["binary", "signed"])
def test_masked_noise_codec_payload_is_mask_bits_plus_seed_and_decodes_exactly(kind):
    from lightning_fl.codecs.masked_noise import MaskedNoiseCodec

    codec = MaskedNoiseCodec(kind, "uniform", 0.01)
    mn = MaskedNoise((37, 5), mask=kind)
    mn.start_round(seed=2**62 + 5, total_steps=1)
    with torch.no_grad():
        mn.u.copy_(torch.randn(37, 5) * 0.01)
    update = mn.noise * mn.upload_mask()
    payload = codec.encode(update, seed=2**62 + 5)
    assert payload.body.numel() == math.ceil(37 * 5 / 8)
    assert len(payload.header) == 2 + 2 * 4 + 8  # dtype, ndim, two dims, 64-bit seed
    assert torch.equal(codec.decode(payload), update)


def test_masked_noise_codec_refuses_other_tensors_and_bad_payloads():
    from lightning_fl.codecs.base import Payload
    from lightning_fl.codecs.masked_noise import MaskedNoiseCodec
    from lightning_fl.exceptions import FederatedRuntimeError

    codec = MaskedNoiseCodec()
    with pytest.raises(FederatedRuntimeError, match="n\\(seed\\) \\* m"):
        codec.encode(torch.randn(10), seed=1)
    good = codec.encode(sample_noise((16,), 1, "uniform", 0.01, "cpu"), seed=1)
    with pytest.raises(PayloadError):
        codec.decode(Payload(good.codec, good.header, good.body[:1]))
    with pytest.raises(PayloadError):
        codec.decode(Payload(good.codec, good.header[:-1], good.body))
