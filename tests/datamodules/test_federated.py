"""The federated data module and its round plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_data
from torch.utils.data import Dataset

from lightning_fl import FederatedConfigError, FederatedDataModule
from lightning_fl.datamodules import DirichletPartitioner, IIDPartitioner, get_source
from lightning_fl.datamodules.plan import assign_to_ranks, build_round_plan, sample_clients


def test_bad_arguments_are_refused_before_training():
    with pytest.raises(FederatedConfigError, match=r"clients_per_round must be in \[1, num_clients=5\], got 6"):
        FederatedDataModule(partitioner=IIDPartitioner(num_clients=5), clients_per_round=6)
    with pytest.raises(FederatedConfigError, match="clients_per_round must be an integer >= 1, got 0"):
        FederatedDataModule(clients_per_round=0)
    with pytest.raises(FederatedConfigError, match="batch_size must be an integer >= 1, got 0"):
        FederatedDataModule(batch_size=0)
    with pytest.raises(FederatedConfigError, match="local_epochs must be an integer >= 1, got -1"):
        FederatedDataModule(local_epochs=-1)
    with pytest.raises(FederatedConfigError, match="client_sampling must be one of"):
        FederatedDataModule(client_sampling="random")
    with pytest.raises(FederatedConfigError, match="alpha must be"):
        DirichletPartitioner(num_clients=10, alpha=0.0)
    with pytest.raises(FederatedConfigError, match="name must be one of"):
        get_source("imagenet")


def test_more_clients_than_samples_and_unsatisfiable_minimum_size():
    dm = FederatedDataModule(make_tiny_data(20), partitioner=IIDPartitioner(num_clients=30), clients_per_round=2)
    with pytest.raises(FederatedConfigError, match=r"num_clients must be at most the number of training samples"):
        dm.setup("fit")
    dm = FederatedDataModule(make_tiny_data(20), clients_per_round=2,
                             partitioner=DirichletPartitioner(num_clients=10, alpha=0.5, min_size=3))
    with pytest.raises(FederatedConfigError, match="min_size"):
        dm.setup("fit")


def test_plan_is_deterministic_and_covers_each_clients_samples_each_epoch():
    dm = FederatedDataModule(make_tiny_data(100), partitioner=IIDPartitioner(num_clients=10), clients_per_round=4,
                             batch_size=3, local_epochs=2, seed=9)
    dm.setup("fit")
    a, b = dm.plan_round(3), dm.plan_round(3)
    assert a.clients.tolist() == b.clients.tolist()
    assert all(np.array_equal(x, y) for x, y in zip(a.batches, b.batches, strict=False))
    for c in a.rank_clients:
        rows = np.concatenate([bt for bt, owner in zip(a.batches, a.batch_client, strict=False) if owner == c])
        assert sorted(rows.tolist()) == sorted(np.repeat(dm.client_indices[c], 2).tolist())
        firsts = np.flatnonzero(a.first & (a.batch_client == c))
        lasts = np.flatnonzero(a.last & (a.batch_client == c))
        assert len(firsts) == len(lasts) == 1 and firsts[0] < lasts[0]


def test_ranks_split_the_round_and_are_padded_to_equal_length():
    dm = FederatedDataModule(make_tiny_data(100), clients_per_round=5, batch_size=4,
                             partitioner=DirichletPartitioner(num_clients=10, alpha=0.3, seed=1))
    dm.setup("fit")
    plans = [dm.plan_round(2, world_size=2, rank=r) for r in range(2)]
    assert plans[0].num_batches == plans[1].num_batches
    assert sorted(plans[0].rank_clients + plans[1].rank_clients) == plans[0].clients.tolist()
    single = dm.plan_round(2)
    real = sum(p.num_batches - p.num_padding_batches for p in plans)
    assert real == single.num_batches


def test_more_ranks_than_clients_pads_an_idle_rank():
    idx = [np.arange(5), np.arange(5, 9)]
    plan = build_round_plan(0, idx, clients_per_round=1, batch_size=2, local_epochs=1, client_sampling="uniform",
                            shuffle=True, seed=0, world_size=2, rank=1)
    assert plan.rank_clients == [] and plan.num_padding_batches == plan.num_batches > 0
    assert not plan.first.any() and not plan.last.any()


def test_assign_to_ranks_balances_work():
    out = assign_to_ranks(np.array([9, 1, 1, 1, 8]), 2)
    loads = [sum([9, 1, 1, 1, 8][i] for i in r) for r in out]
    assert sorted(loads) == [10, 10]


def test_sampling_modes():
    sizes = np.array([1, 1, 1, 1000, 1000, 1000])
    assert sample_clients(0, sizes, 2, "all", 0).tolist() == list(range(6))
    picks = np.concatenate([sample_clients(r, sizes, 2, "size", 0) for r in range(200)])
    assert (picks >= 3).mean() > 0.95
    uniform = np.concatenate([sample_clients(r, sizes, 2, "uniform", 0) for r in range(300)])
    assert 0.35 < (uniform >= 3).mean() < 0.65
    for r in range(20):
        s = sample_clients(r, sizes, 3, "uniform", 0)
        assert len(set(s.tolist())) == 3


class PlainDataset(Dataset):
    """A map-style dataset with no `targets` attribute: labels are read from the samples."""

    def __init__(self, n: int) -> None:
        self.data = make_tiny_data(n)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.data[i]


def test_any_map_style_dataset_works_through_a_dataloader():
    dm = FederatedDataModule(PlainDataset(40), partitioner=IIDPartitioner(num_clients=4), clients_per_round=2,
                             batch_size=4)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == dm.current_plan.num_batches
    x, y = batches[0]
    assert x.shape == (4, 6) and y.dtype == torch.int64


def test_local_validation_split_is_disjoint_and_seeded():
    dm = FederatedDataModule(make_tiny_data(100), partitioner=IIDPartitioner(num_clients=5), clients_per_round=2,
                             local_val_fraction=0.2, seed=3)
    dm.setup("fit")
    for train, val in zip(dm.client_indices, dm.client_val_indices, strict=False):
        assert len(val) == 4 and not set(train) & set(val)
    x, _ = next(iter(dm.client_dataloader(0, "val")))
    assert len(x) == 4
