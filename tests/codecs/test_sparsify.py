"""Top-k and magnitude pruning."""

from __future__ import annotations

import pytest
import torch

from lightning_fl.codecs import MagnitudePrune, TopK, index_dtype
from lightning_fl.exceptions import FederatedConfigError


@pytest.mark.parametrize(
    ("numel", "dtype"),
    [
        (1, torch.uint8),
        (256, torch.uint8),
        (257, torch.int16),
        (65_536, torch.int16),
        (65_537, torch.int32),
        (1 << 32, torch.int32),
        ((1 << 32) + 1, torch.int64),
    ],
)
def test_index_dtype_is_the_smallest_that_fits(numel, dtype):
    assert index_dtype(numel) == dtype


@pytest.mark.parametrize(("numel", "index_bytes"), [(200, 1), (60_000, 2), (70_000, 4)])
def test_topk_payload_is_values_plus_smallest_indices(numel, index_bytes):
    codec = TopK(k=10)
    x = torch.randn(numel)
    x[-10:] = 100.0 + torch.arange(10.0)  # the largest sit at indices above 2**15 for the int16 case
    payload = codec.encode(x, seed=0)
    assert payload.body.numel() == 10 * (4 + index_bytes)
    y = codec.decode(payload)
    assert torch.equal(y[-10:], x[-10:]) and torch.count_nonzero(y) == 10


@pytest.mark.parametrize("numel", [1000, 100_000])
def test_topk_keeps_the_largest_magnitudes(numel):
    x = torch.randn(numel)
    y = TopK(0.01).decode(TopK(0.01).encode(x, seed=0))
    kept = y != 0
    assert int(kept.sum()) == round(0.01 * numel)
    assert x[kept].abs().min() >= x[~kept].abs().max()
    assert torch.equal(y[kept], x[kept])


@pytest.mark.parametrize("density", [0.01, 0.3])
def test_magnitude_prune_reaches_the_density(density):
    x = torch.randn(50_000)
    codec = MagnitudePrune(density)
    y = codec.decode(codec.encode(x, seed=0))
    kept = y != 0
    assert int(kept.sum()) == round(density * 50_000)
    assert x[kept].abs().min() >= x[~kept].abs().max()


def test_magnitude_prune_keeps_ties_and_handles_mostly_zero_updates():
    x = torch.tensor([3.0, -1.0, 1.0, 1.0, 0.5, 0.0])
    assert MagnitudePrune(0.34).decode(MagnitudePrune(0.34).encode(x, 0)).tolist() == [3.0, -1.0, 1.0, 1.0, 0.0, 0.0]
    sparse = torch.zeros(1000)
    sparse[:3] = 1.0
    payload = MagnitudePrune(0.1).encode(sparse, 0)
    assert payload.body.numel() == 100 * (4 + 2)  # exactly the target count, zeros included
    assert torch.equal(MagnitudePrune(0.1).decode(payload), sparse)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one"),
        ({"fraction": 0.1, "k": 3}, "exactly one"),
        ({"fraction": 0.0}, "fraction"),
        ({"k": 0}, "k must"),
    ],
)
def test_topk_bad_arguments(kwargs, match):
    with pytest.raises(FederatedConfigError, match=match):
        TopK(**kwargs)


def test_prune_bad_density():
    with pytest.raises(FederatedConfigError, match="density"):
        MagnitudePrune(1.5)
