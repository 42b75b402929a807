"""Fast Walsh-Hadamard transform and the randomized rotation."""

from __future__ import annotations

import math

import pytest
import torch
from codec_threads import single_thread  # noqa: F401 - fixture
from scipy.linalg import hadamard

from lightning_fl.codecs import RandomHadamard, fwht, next_power_of_two
from lightning_fl.exceptions import FederatedConfigError

pytestmark = pytest.mark.usefixtures("single_thread")


def _butterflies(x: torch.Tensor) -> torch.Tensor:
    """Plain radix-2 reference."""
    y, h = x.clone(), 1
    while h < y.numel():
        v = y.view(-1, 2, h)
        y = torch.stack((v[:, 0] + v[:, 1], v[:, 0] - v[:, 1]), 1).reshape(-1)
        h *= 2
    return y / math.sqrt(y.numel())


@pytest.mark.parametrize("n", [8, 16])
def test_equals_dense_sylvester_matrix(n):
    x = torch.randn(n, dtype=torch.float64)
    dense = torch.from_numpy(hadamard(n)).double() / math.sqrt(n)
    torch.testing.assert_close(fwht(x), dense @ x)


@pytest.mark.parametrize("n", [1, 2, 64, 1 << 12, 1 << 18])  # 2**18 takes the blocked (cache-sized rows) path
def test_orthogonal_and_self_inverse(n):
    x = torch.randn(n, dtype=torch.float64)
    y = fwht(x)
    torch.testing.assert_close(y, _butterflies(x))
    torch.testing.assert_close(torch.linalg.vector_norm(y), torch.linalg.vector_norm(x))
    torch.testing.assert_close(fwht(y), x)


def test_overwrite_false_keeps_input_and_true_may_reuse_it():
    x = torch.randn(1 << 18)
    before = x.clone()
    y = fwht(x)
    assert torch.equal(x, before)
    torch.testing.assert_close(fwht(x.clone(), overwrite=True), y)


def test_full_precision_even_when_tf32_or_bf16_matmul_is_allowed():
    x = torch.randn(4096)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        y = fwht(fwht(x))
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(3,), (12,), (0,)])
def test_needs_a_power_of_two_length(shape):
    with pytest.raises(FederatedConfigError, match="power of two"):
        fwht(torch.zeros(shape))


@pytest.mark.parametrize("d", [1, 5, 64, 1000, 4097])
def test_random_rotation_keeps_norm_and_round_trips(d):
    codec = RandomHadamard()
    x = torch.randn(d)
    payload = codec.encode(x, seed=3)
    coefficients = payload.body.view(torch.float32)
    assert coefficients.numel() == next_power_of_two(d)
    torch.testing.assert_close(torch.linalg.vector_norm(coefficients), torch.linalg.vector_norm(x))
    torch.testing.assert_close(codec.decode(payload), x, rtol=0, atol=1e-5)


def test_rotation_spreads_a_spike():
    x = torch.zeros(1024)
    x[7] = 1.0
    coefficients = RandomHadamard().encode(x, seed=0).body.view(torch.float32)
    torch.testing.assert_close(coefficients.abs(), torch.full((1024,), 1 / 32))
