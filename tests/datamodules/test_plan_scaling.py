"""A round's plan costs O(clients_per_round) and the data module O(1) memory per client, with the plans unchanged.

The recorded plans (``data/plans_before_flat_indices.json``) were computed by the code before client indices were
stored flat: the same seeds must still give the same clients, batches and partition digest (checkpoints rely on it).
Scaling is checked by memory, not time: a round's plan must allocate far less than one array of ``num_clients``
integers.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lightning_fl.datamodules.fingerprint as fingerprint
from lightning_fl.datamodules import (
    DirichletPartitioner,
    FederatedDataModule,
    IIDPartitioner,
    InMemoryDataset,
    QuantitySkewPartitioner,
)
from lightning_fl.datamodules.client_indices import ClientIndices
from lightning_fl.datamodules.plan import build_round_plan, sample_clients
from lightning_fl.datamodules.sampling import size_cdf
from lightning_fl.exceptions import FederatedConfigError

RECORDED = json.loads((Path(__file__).parent / "data" / "plans_before_flat_indices.json").read_text())

#: The configurations of the recorded plans: (samples, partitioner, clients_per_round, client_sampling, batch_size,
#: local_epochs, local_val_fraction, drop_last, seed, world_size, pin_clients).
CONFIGS: dict[str, tuple[Any, ...]] = {
    "iid_uniform": (60, ("iid", 12), 4, "uniform", 4, 2, 0.0, False, 3, 2, False),
    "dirichlet_size_val": (90, ("dirichlet", 10), 3, "size", 3, 1, 0.25, False, 5, 1, False),
    "iid_pinned": (60, ("iid", 12), 5, "uniform", 4, 1, 0.0, False, 4, 2, True),
    "iid_20000_size": (40000, ("iid", 20000), 6, "size", 4, 1, 0.0, False, 0, 1, False),
    "iid_20000_uniform": (40000, ("iid", 20000), 6, "uniform", 4, 1, 0.0, False, 0, 1, False),
    "quantity_size_droplast": (80, ("quantity", 8), 3, "size", 2, 1, 0.0, True, 1, 2, False),
}


def _data(num_samples: int) -> InMemoryDataset:
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(num_samples, 1, generator=gen)
    return InMemoryDataset(inputs, torch.randint(0, 3, (num_samples,), generator=gen))


def _recorded_dm(name: str) -> tuple[FederatedDataModule, int]:
    n, (kind, clients), per_round, sampling, batch, epochs, val, drop, seed, world, pin = CONFIGS[name]
    partitioner = {
        "iid": lambda: IIDPartitioner(clients, seed=2),
        "dirichlet": lambda: DirichletPartitioner(clients, alpha=0.5, seed=2, min_size=4),
        "quantity": lambda: QuantitySkewPartitioner(clients, sigma=1.0, seed=2, min_size=2),
    }[kind]()
    dm = FederatedDataModule(_data(n), partitioner=partitioner, clients_per_round=per_round, batch_size=batch,
                             local_epochs=epochs, client_sampling=sampling, local_val_fraction=val, drop_last=drop,
                             seed=seed)
    dm.setup("fit")
    dm.pin_clients_to_ranks = pin
    return dm, world


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_plans_and_partition_digest_equal_the_recorded_ones(name: str) -> None:
    dm, world = _recorded_dm(name)
    assert isinstance(dm.client_indices, ClientIndices)
    assert fingerprint.data_fingerprint(dm)["partition"] == RECORDED[name]["digest"]
    for round_idx, rank, clients, rank_clients, batches, batch_client in RECORDED[name]["rounds"]:
        plan = dm.plan_round(round_idx, world, rank)
        assert plan.clients.tolist() == clients
        assert plan.rank_clients == rank_clients
        assert [b.tolist() for b in plan.batches] == batches
        assert plan.batch_client.tolist() == batch_client


def test_size_sampling_with_a_cdf_picks_what_numpy_picks() -> None:
    """Distinct first draws are answered from the CDF; a repeated client falls back to numpy's own call (both paths
    are hit: small populations with a heavy client repeat often)."""
    rng = np.random.default_rng(0)
    for trial in range(300):
        sizes = rng.integers(1, 30, int(rng.integers(3, 400)))
        sizes[0] = 1 + 50 * (trial % 2) * len(sizes)  # every other population has one client with most samples
        k = int(rng.integers(1, min(len(sizes), 12)))
        want = sample_clients(trial, sizes, k, "size", seed=7)
        assert sample_clients(trial, sizes, k, "size", seed=7, cdf=size_cdf(sizes)).tolist() == want.tolist()


def _plan_peak_bytes(plan: Any, rounds: range) -> int:
    """The largest allocation peak of one planned round (after ``plan`` ran once, so caches are built)."""
    plan(rounds.start - 1)
    worst = 0
    tracemalloc.start()
    try:
        for round_idx in rounds:
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            plan(round_idx)
            worst = max(worst, tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()
    return worst


@pytest.mark.parametrize("sampling", ["uniform", "size"])
def test_a_round_plan_allocates_nothing_of_the_size_of_the_population(sampling: str) -> None:
    num_clients = 2_000_000  # one sample each: an array of num_clients int64 is 16 MB
    indices = ClientIndices(np.arange(num_clients), np.arange(num_clients + 1))

    def plan(round_idx: int) -> None:
        build_round_plan(round_idx, indices, clients_per_round=20, batch_size=4, local_epochs=1,
                         client_sampling=sampling, shuffle=True, seed=0, world_size=2, rank=1)  # type: ignore[arg-type]

    assert _plan_peak_bytes(plan, range(1, 6)) < 200_000


def test_the_data_module_keeps_a_few_bytes_per_client_and_plans_without_them() -> None:
    num_clients = 30_000
    data = _data(num_clients)
    tracemalloc.start()
    try:
        dm = FederatedDataModule(data, partitioner=IIDPartitioner(num_clients, seed=0), clients_per_round=10)
        dm.setup("fit")
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the int64 indices, and offsets and sizes: 8 + 3 * 8 bytes per client, plus some slack (a list of arrays: ~250)
    assert kept < num_clients * (8 + 3 * 8 + 8)
    assert _plan_peak_bytes(dm.plan_round, range(1, 6)) < num_clients


def test_client_indices_read_like_a_list_of_arrays() -> None:
    arrays = [np.array([4, 9]), np.array([], dtype=np.int64), np.array([0, 2, 7])]
    ix = ClientIndices.from_arrays(arrays)
    assert len(ix) == 3 and ix.sizes.tolist() == [2, 0, 3]
    assert [a.tolist() for a in ix] == [a.tolist() for a in arrays]
    assert ix[-1].tolist() == [0, 2, 7] and ix[np.int64(0)].tolist() == [4, 9]
    assert [a.tolist() for a in ix[1:]] == [[], [0, 2, 7]]
    with pytest.raises(IndexError, match=r"client id must be in \[-3, 2\], got 3"):
        ix[3]
    assert ClientIndices.empty(2).sizes.tolist() == [0, 0]
    for flat in ([3, 8, 2, 5, 0], [3, -1, 2, 5, -7], [2**62, 1, 0, 5, 4]):  # one sort of a key, or a lexsort
        ordered = ClientIndices(np.array(flat), np.array([0, 3, 3, 5])).sorted()
        assert [a.tolist() for a in ordered] == [sorted(flat[:3]), [], sorted(flat[3:])]
    assert isinstance(IIDPartitioner(3, seed=0).partition(None, num_samples=7), ClientIndices)


def test_client_indices_refuse_offsets_that_do_not_delimit_the_indices() -> None:
    with pytest.raises(FederatedConfigError, match=r"offsets must be num_clients \+ 1 non-decreasing entries from 0"):
        ClientIndices(np.arange(4), np.array([0, 3, 2, 4]))
    with pytest.raises(FederatedConfigError, match=r"to len\(flat\)=4, got 2 entries from \[0\] to \[3\]"):
        ClientIndices(np.arange(4), np.array([0, 3]))


def test_the_flat_partition_digest_equals_the_digest_of_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    monkeypatch.setattr(fingerprint, "_DIGEST_CHUNK", 7)  # several chunks, one of them short
    for _ in range(10):
        sizes = rng.integers(0, 3, 40) * 10 ** rng.integers(0, 4, 40)  # empty clients, sizes of 1 to 4 digits
        train = [rng.integers(0, 10**12, int(s)) for s in sizes]
        val = [rng.integers(0, 5, int(s)) for s in rng.integers(0, 3, 40)]
        flat = fingerprint.partition_digest(ClientIndices.from_arrays(train), ClientIndices.from_arrays(val))
        assert flat == fingerprint.partition_digest(train, val)


def test_the_partition_digest_is_computed_once_per_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint may be saved every round: its fingerprint must not rehash the partition each time."""
    calls: list[int] = []
    digest = fingerprint.partition_digest
    monkeypatch.setattr(fingerprint, "partition_digest", lambda *a: calls.append(1) or digest(*a))
    dm, _ = _recorded_dm("iid_uniform")
    first = fingerprint.data_fingerprint(dm)["partition"]
    assert fingerprint.data_fingerprint(dm)["partition"] == first and len(calls) == 1
    dm.client_val_indices = ClientIndices.from_arrays([np.array([i]) for i in range(len(dm.client_indices))])
    assert fingerprint.data_fingerprint(dm)["partition"] != first and len(calls) == 2
