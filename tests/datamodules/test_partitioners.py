"""Contract and property tests of the partitioners."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from lightning_fl.datamodules.partitioners import (
    DirichletPartitioner,
    IIDPartitioner,
    NaturalPartitioner,
    Partitioner,
    QuantitySkewPartitioner,
    ShardPartitioner,
)
from lightning_fl.exceptions import FederatedConfigError

NUM_SAMPLES, NUM_CLASSES, NUM_GROUPS = 300, 10, 40
LABELS = np.random.default_rng(123).permutation(np.repeat(np.arange(NUM_CLASSES), NUM_SAMPLES // NUM_CLASSES))
GROUPS = np.random.default_rng(456).integers(0, NUM_GROUPS, NUM_SAMPLES)
GROUPS[:NUM_GROUPS] = np.arange(NUM_GROUPS)  # every group key occurs

FACTORIES: dict[str, Callable[[int], Partitioner]] = {
    "iid": lambda seed: IIDPartitioner(num_clients=7, seed=seed),
    "dirichlet": lambda seed: DirichletPartitioner(num_clients=7, alpha=0.5, seed=seed),
    "shards": lambda seed: ShardPartitioner(num_clients=7, shards_per_client=2, seed=seed),
    "quantity": lambda seed: QuantitySkewPartitioner(num_clients=7, sigma=1.0, seed=seed),
    "natural": lambda seed: NaturalPartitioner(num_clients=7, seed=seed),
}


def _label_entropy(parts: list[np.ndarray]) -> float:
    """Mean entropy (nats) of the per-client label distributions."""
    entropies = []
    for part in parts:
        p = np.bincount(LABELS[part], minlength=NUM_CLASSES) / len(part)
        p = p[p > 0]
        entropies.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(entropies))


@pytest.mark.parametrize("name", FACTORIES)
def test_covers_every_sample_exactly_once(name: str) -> None:
    parts = FACTORIES[name](0).partition(LABELS, GROUPS)
    assert len(parts) == 7
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)  # sorted, no duplicates
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(NUM_SAMPLES))


@pytest.mark.parametrize("name", FACTORIES)
def test_same_seed_same_result_other_seed_other_result(name: str) -> None:
    first = FACTORIES[name](0).partition(LABELS, GROUPS)
    again = FACTORIES[name](0).partition(LABELS, GROUPS)
    other = FACTORIES[name](1).partition(LABELS, GROUPS)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("name", FACTORIES)
def test_result_is_cached_per_input(name: str) -> None:
    partitioner = FACTORIES[name](0)
    parts = partitioner.partition(LABELS, GROUPS)
    assert partitioner.partition(LABELS, GROUPS) is parts
    assert partitioner.partition(LABELS[:200], GROUPS[:200]) is not parts
    assert sum(len(p) for p in partitioner.partition(LABELS[:200], GROUPS[:200])) == 200


@pytest.mark.parametrize("name", FACTORIES)
def test_num_clients_zero_raises(name: str) -> None:
    cls = type(FACTORIES[name](0))
    kwargs = {"alpha": 1.0} if cls is DirichletPartitioner else {}
    with pytest.raises(FederatedConfigError, match=r"num_clients must be an integer >= 1, got 0"):
        cls(num_clients=0, **kwargs)


@pytest.mark.parametrize(
    "partitioner",
    [
        IIDPartitioner(num_clients=301),
        DirichletPartitioner(num_clients=301, alpha=1.0),
        ShardPartitioner(num_clients=301, shards_per_client=1),
        QuantitySkewPartitioner(num_clients=301),
        NaturalPartitioner(num_clients=301),
    ],
    ids=lambda p: type(p).__name__,
)
def test_more_clients_than_samples_raises(partitioner: Partitioner) -> None:
    with pytest.raises(FederatedConfigError, match=r"num_clients must be at most the number of training samples \(300"):
        partitioner.partition(LABELS, GROUPS)


def test_iid_matches_reference_and_balances_sizes() -> None:
    parts = IIDPartitioner(num_clients=7, seed=3).partition(LABELS)
    reference = np.array_split(np.random.default_rng(3).permutation(NUM_SAMPLES), 7)
    assert all(np.array_equal(p, np.sort(r)) for p, r in zip(parts, reference, strict=True))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_smaller_alpha_gives_more_label_skew() -> None:
    skewed = DirichletPartitioner(num_clients=10, alpha=0.1, seed=0).partition(LABELS)
    balanced = DirichletPartitioner(num_clients=10, alpha=100.0, seed=0).partition(LABELS)
    assert _label_entropy(skewed) < _label_entropy(balanced) - 0.5
    assert _label_entropy(balanced) > 0.9 * np.log(NUM_CLASSES)


def test_dirichlet_honours_min_size() -> None:
    parts = DirichletPartitioner(num_clients=10, alpha=0.3, seed=0, min_size=10).partition(LABELS)
    assert min(len(p) for p in parts) >= 10


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf"), "a"])
def test_dirichlet_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(FederatedConfigError, match=r"alpha must be a finite number > 0, got"):
        DirichletPartitioner(num_clients=2, alpha=alpha)


def test_dirichlet_rejects_infeasible_min_size_at_once() -> None:
    partitioner = DirichletPartitioner(num_clients=10, alpha=1.0, min_size=31)
    with pytest.raises(FederatedConfigError, match=r"num_clients \* min_size .* \(300\), got 10 \* 31 = 310"):
        partitioner.partition(LABELS)


def test_dirichlet_gives_up_after_max_retries() -> None:
    partitioner = DirichletPartitioner(num_clients=10, alpha=0.01, min_size=25, max_retries=3)
    with pytest.raises(FederatedConfigError, match=r"max_retries=3 .*lower num_clients or min_size, raise alpha"):
        partitioner.partition(LABELS)


@pytest.mark.parametrize(("kwargs", "match"), [({"min_size": -1}, "min_size"), ({"max_retries": 0}, "max_retries")])
def test_dirichlet_rejects_bad_integers(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(FederatedConfigError, match=rf"{match} must be an integer >= \d, got -?\d"):
        DirichletPartitioner(num_clients=2, alpha=1.0, **kwargs)


def test_shards_give_each_client_k_shards_and_at_most_k_labels() -> None:
    partitioner = ShardPartitioner(num_clients=15, shards_per_client=2, seed=0)  # 30 shards of 10, 3 per label
    parts = partitioner.partition(LABELS)
    shards = partitioner.client_shards
    assert shards.shape == (15, 2)
    np.testing.assert_array_equal(np.sort(shards.ravel()), np.arange(30))
    assert all(len(p) == 20 for p in parts)
    assert all(len(np.unique(LABELS[p])) <= 2 for p in parts)
    assert _label_entropy(parts) < _label_entropy(IIDPartitioner(num_clients=15).partition(LABELS))


def test_shards_reject_fewer_samples_than_shards() -> None:
    with pytest.raises(FederatedConfigError, match=r"num_clients \* shards_per_client \(100 \* 4 = 400 shards\)"):
        ShardPartitioner(num_clients=100, shards_per_client=4).partition(LABELS)
    with pytest.raises(FederatedConfigError, match=r"shards_per_client must be an integer >= 1, got 0"):
        ShardPartitioner(num_clients=2, shards_per_client=0)
    with pytest.raises(RuntimeError, match="after partition"):
        _ = ShardPartitioner(num_clients=2).client_shards


def test_quantity_skew_spread_grows_with_sigma() -> None:
    labels = np.zeros(10_000, dtype=np.int64)

    def spread(sigma: float) -> float:
        sizes = np.array([len(p) for p in QuantitySkewPartitioner(50, sigma=sigma, seed=0).partition(labels)])
        assert sizes.sum() == len(labels) and sizes.min() >= 1
        return float(sizes.std() / sizes.mean())

    assert spread(0.0) < 0.01
    assert 0.05 < spread(0.2) < spread(1.0) < spread(2.0)


def test_quantity_skew_honours_min_size_and_rejects_bad_arguments() -> None:
    parts = QuantitySkewPartitioner(num_clients=20, sigma=3.0, seed=0, min_size=10).partition(LABELS)
    assert min(len(p) for p in parts) >= 10
    with pytest.raises(FederatedConfigError, match=r"num_clients \* min_size .* got 20 \* 16 = 320"):
        QuantitySkewPartitioner(num_clients=20, min_size=16).partition(LABELS)
    with pytest.raises(FederatedConfigError, match=r"sigma must be a finite number >= 0, got -1.0"):
        QuantitySkewPartitioner(num_clients=2, sigma=-1.0)


def test_natural_gives_one_client_per_group() -> None:
    partitioner = NaturalPartitioner(seed=0)
    parts = partitioner.partition(LABELS, GROUPS)
    assert len(parts) == NUM_GROUPS
    for key, part in zip(partitioner.client_keys, parts, strict=True):
        np.testing.assert_array_equal(part, np.flatnonzero(np.equal(GROUPS, key[0])))
    assert [k.tolist() for k in partitioner.client_keys] == [[g] for g in range(NUM_GROUPS)]
    # without num_clients the result does not depend on the seed
    other = NaturalPartitioner(seed=1).partition(LABELS, GROUPS)
    assert all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_natural_merges_whole_groups_into_fewer_clients() -> None:
    partitioner = NaturalPartitioner(num_clients=7, seed=0)
    parts = partitioner.partition(LABELS, GROUPS)
    keys = partitioner.client_keys
    np.testing.assert_array_equal(np.sort(np.concatenate(keys)), np.arange(NUM_GROUPS))
    assert sorted(len(k) for k in keys) == [5, 5, 6, 6, 6, 6, 6]  # round-robin: 40 groups over 7 clients
    for client_keys, part in zip(keys, parts, strict=True):
        np.testing.assert_array_equal(part, np.flatnonzero(np.isin(GROUPS, client_keys)))


def test_natural_accepts_string_keys() -> None:
    partitioner = NaturalPartitioner()
    parts = partitioner.partition(np.zeros(4, dtype=np.int64), np.array(["w2", "w1", "w2", "w10"], dtype=object))
    assert [p.tolist() for p in parts] == [[1], [3], [0, 2]]
    assert [k.tolist() for k in partitioner.client_keys] == [["w1"], ["w10"], ["w2"]]


def test_natural_errors() -> None:
    with pytest.raises(FederatedConfigError, match=r"has no per-sample group keys \(groups=None\).*LEAF.*Synthetic"):
        NaturalPartitioner().partition(LABELS)
    with pytest.raises(FederatedConfigError, match=rf"number of distinct groups \({NUM_GROUPS}\), got 41"):
        NaturalPartitioner(num_clients=41).partition(LABELS, GROUPS)
    with pytest.raises(RuntimeError, match="after partition"):
        _ = NaturalPartitioner().client_keys


def test_partition_rejects_badly_shaped_inputs() -> None:
    with pytest.raises(FederatedConfigError, match=r"labels must be a 1-D array .* got shape \(2, 150\)"):
        IIDPartitioner(num_clients=2).partition(LABELS.reshape(2, 150))
    with pytest.raises(FederatedConfigError, match=r"groups must have one entry per sample, shape \(300,\), got"):
        NaturalPartitioner().partition(LABELS, GROUPS[:10])
    with pytest.raises(FederatedConfigError, match=r"num_clients must be an integer >= 1, got True"):
        IIDPartitioner(num_clients=True)
    with pytest.raises(FederatedConfigError, match=r"num_clients must be an integer >= 1, got 2.5"):
        IIDPartitioner(num_clients=2.5)  # type: ignore[arg-type]
