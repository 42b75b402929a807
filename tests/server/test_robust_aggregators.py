"""Robust aggregators against numpy/scipy, norm clipping, and the per-client store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.client_store import merge_by_owner
from lightning_fl.server import (
    ClientStore,
    CoordinateMedianAggregator,
    NormClippingAggregator,
    TrimmedMeanAggregator,
    WeightedMeanAggregator,
)


def feed(agg, rows, weights=None):
    agg.bind(rows.shape[1], torch.device("cpu"), extra_numel=1)
    agg.reset()
    for i, row in enumerate(rows):
        agg.update(torch.from_numpy(row), weight=1.0 if weights is None else weights[i], extra=torch.ones(1))
    agg.sync()


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_median_matches_numpy(n):
    rows = np.random.default_rng(n).normal(size=(n, 37)).astype(np.float32)
    agg = CoordinateMedianAggregator()
    feed(agg, rows, weights=list(range(1, n + 1)))  # weights do not matter to an order statistic
    np.testing.assert_allclose(agg.compute().numpy(), np.median(rows, axis=0), rtol=1e-6, atol=1e-7)
    assert agg.count == n and agg.extras.tolist() == [float(n)]


@pytest.mark.parametrize(("n", "beta"), [(10, 0.1), (10, 0.25), (7, 0.2), (3, 0.0), (9, 0.49)])
def test_trimmed_mean_matches_numpy_and_scipy(n, beta):
    rows = np.random.default_rng(n).normal(size=(n, 23)).astype(np.float32)
    agg = TrimmedMeanAggregator(beta=beta)
    feed(agg, rows)
    k = int(beta * n)
    by_hand = np.sort(rows, axis=0)[k : n - k].mean(axis=0)
    np.testing.assert_allclose(agg.compute().numpy(), by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(agg.compute().numpy(), stats.trim_mean(rows, beta, axis=0), rtol=1e-5, atol=1e-6)


def test_robust_aggregators_resist_one_huge_update_and_reuse_their_buffer():
    rows = np.ones((5, 4), dtype=np.float32)
    rows[0] = 1e6
    for agg in (CoordinateMedianAggregator(), TrimmedMeanAggregator(beta=0.2)):
        for _ in range(2):  # a second round reuses the grown buffer
            feed(agg, rows)
            np.testing.assert_allclose(agg.compute().numpy(), np.ones(4))


def test_aggregation_over_all_clients_scales_by_the_reported_weight():
    rows = np.array([[1.0], [3.0], [5.0]], dtype=np.float32)
    agg = CoordinateMedianAggregator()
    feed(agg, rows, weights=[2.0, 2.0, 2.0])
    assert agg.compute(denominator=12.0).tolist() == [1.5]  # median 3 scaled by 6 / 12
    empty = TrimmedMeanAggregator()
    empty.bind(3, torch.device("cpu"))
    assert empty.compute().tolist() == [0.0, 0.0, 0.0]


def test_norm_clipping_bounds_each_update():
    rows = np.array([[3.0, 4.0], [0.3, 0.4]], dtype=np.float32)  # norms 5 and 0.5
    agg = NormClippingAggregator(max_norm=1.0)
    feed(agg, rows, weights=[1.0, 3.0])
    np.testing.assert_allclose(agg.compute().numpy(), (np.array([0.6, 0.8]) + 3 * np.array([0.3, 0.4])) / 4, rtol=1e-6)


def test_weighted_mean_binds_late_and_keeps_its_old_constructor():
    agg = WeightedMeanAggregator()
    feed(agg, np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32), weights=[1.0, 3.0])
    assert agg.compute().tolist() == [2.5, 5.0]
    assert WeightedMeanAggregator(3).weighted_sum.shape == (3,)
    assert repr(TrimmedMeanAggregator(beta=0.2)) == "TrimmedMeanAggregator(beta=0.2)"


def test_bad_arguments():
    with pytest.raises(FederatedConfigError, match=r"beta must be in \[0, 0.5\), got 0.5"):
        TrimmedMeanAggregator(beta=0.5)
    with pytest.raises(FederatedConfigError, match="max_norm must be a finite number > 0, got 0"):
        NormClippingAggregator(max_norm=0)


def test_client_store_is_lru_bounded_and_merges_by_owner():
    store: ClientStore[torch.Tensor] = ClientStore(max_clients=2)
    store.put(0, torch.zeros(2))
    store.put(1, torch.ones(2))
    assert store.get(0) is not None  # 0 is now the most recent
    store.put(2, torch.full((2,), 2.0))
    assert [c for c, _ in store.items()] == [0, 2]
    assert store.peek(0) is not None and [c for c, _ in store.items()] == [0, 2]  # peeking keeps the order
    restored: ClientStore[torch.Tensor] = ClientStore()
    restored.load_state_dict(store.state_dict())
    assert [c for c, _ in restored.items()] == [0, 2] and restored.nbytes == 16
    restored.keep_owned(rank=1, world_size=2)
    assert list(restored) == []
    assert merge_by_owner([{0: "a", 1: "stale"}, {1: "b"}]) == {0: "a", 1: "b"}
