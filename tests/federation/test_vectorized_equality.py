"""Vectorized cohorts train exactly what the sequential mode trains: every state_dict tensor after 3 rounds."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier
from pytorch_lightning.demos.boring_classes import BoringModel, RandomDataset
from torch import nn
from vectorized_helpers import assert_same_state, fit, make_dm

from lightning_fl import ClassifierModule, FederatedDataModule
from lightning_fl.codecs import Chain, ErrorFeedback, StochasticQuantizer, TensorPolicy, TopK
from lightning_fl.datamodules import IIDPartitioner, InMemoryDataset, QuantitySkewPartitioner
from lightning_fl.datamodules.partitioners.base import Partitioner
from lightning_fl.nn import MLP, SmallCNN
from lightning_fl.server import ServerAdam
from lightning_fl.server.robust import CoordinateMedianAggregator


class Optimized(TinyClassifier):
    """TinyClassifier with a chosen optimizer and an optional step-interval scheduler."""

    def __init__(self, optimizer: str = "sgd", scheduler: bool = False) -> None:
        super().__init__()
        self.optimizer_name, self.scheduler = optimizer, scheduler

    def configure_optimizers(self) -> Any:
        if self.optimizer_name == "adam":
            optimizer: torch.optim.Optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
        else:
            optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True)
        if not self.scheduler:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def test_mlp_classifier_equals_sequential():
    model_fn = partial(ClassifierModule, backbone=MLP(6, [16], 3), num_classes=3, lr=0.1)
    sequential, _ = fit(False, model_fn)
    vectorized, fedavg = fit(True, model_fn)
    assert fedavg.vectorized
    assert_same_state(sequential, vectorized)


class FixedSizes(Partitioner):
    """Consecutive blocks of the given sizes."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__(len(sizes), 0)
        self.sizes = sizes

    def _assign(self, num_samples: int, labels: Any, groups: Any, rng: Any) -> list[np.ndarray]:
        return np.split(np.arange(num_samples), np.cumsum(self.sizes)[:-1])


def image_dm() -> FederatedDataModule:
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (48,), generator=gen)
    x = torch.randn(48, 1, 8, 8, generator=gen, dtype=torch.float64) + y.view(-1, 1, 1, 1)
    # unequal clients whose last batches are smaller: the second step trains client 0 alone (a batch of 6), then
    # clients 1 and 2 together (batches of 4), then client 3 alone (a batch of 2)
    return FederatedDataModule(InMemoryDataset(x, y), partitioner=FixedSizes([12, 10, 10, 8, 8]),
                               clients_per_round=4, client_sampling="all", batch_size=6, seed=3)


def test_cnn_with_batchnorm_equals_sequential_running_statistics_included():
    model_fn = partial(ClassifierModule, backbone=SmallCNN(1, 3, image_size=8, channels=(3, 4)), num_classes=3)
    sequential, _ = fit(False, model_fn, image_dm)
    vectorized, fedavg = fit(True, model_fn, image_dm)
    assert fedavg.vectorized
    assert_same_state(sequential, vectorized)
    assert vectorized.state_dict()["backbone.1.num_batches_tracked"] > 0


skewed = partial(make_dm, partitioner=QuantitySkewPartitioner(num_clients=6, sigma=1.0, seed=0, min_size=3),
                 local_epochs=2)


@pytest.mark.parametrize(("model_fn", "dm_fn", "chunk"), [
    (partial(Optimized, "sgd"), skewed, None),  # momentum, nesterov, weight decay; 2 local epochs; skewed sizes
    (partial(Optimized, "adam"), make_dm, None),
    # a step-interval scheduler on the federated clock, restarted at every chunk's start as at every client's
    (partial(Optimized, "sgd", scheduler=True), skewed, 2),
], ids=["sgd-momentum-wd-skewed-2-epochs", "adam", "step-scheduler-2-chunks"])
def test_optimizers_and_schedulers_equal_sequential(model_fn, dm_fn, chunk):
    sequential, _ = fit(False, model_fn, dm_fn)
    vectorized, _ = fit(True, model_fn, dm_fn, fedavg_kwargs={"max_parallel_clients": chunk})
    assert_same_state(sequential, vectorized)


class HeldAtStepEnd(pl.Callback):
    """After each step (and the server callback's hook): whether it closed a chunk, and whether the optimizer holds
    the module's own parameters again."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        closes = trainer.train_dataloader.cohorts.closes_chunk(batch_idx)
        params = trainer.optimizers[0].param_groups[0]["params"]
        self.seen.append((closes, all(isinstance(p, nn.Parameter) for p in params)))


def test_several_chunks_equal_sequential_and_each_chunk_is_freed_at_its_end():
    sequential, _ = fit(False)
    held = HeldAtStepEnd()
    chunked, fedavg = fit(True, fedavg_kwargs={"max_parallel_clients": 2}, callbacks=[held])
    assert fedavg.plan_request().cohort_size == 2
    assert_same_state(sequential, chunked)
    assert sum(closes for closes, _ in held.seen) == 2 * 3  # 4 clients per round in chunks of 2, 3 rounds
    assert all(own == closes for closes, own in held.seen)


def test_codec_chains_both_ways_equal_sequential():
    def codecs() -> dict[str, Any]:
        return {"downlink": StochasticQuantizer(bits=4),
                "uplink": ErrorFeedback(Chain(TopK(fraction=0.3), StochasticQuantizer(bits=6))),
                "policy": TensorPolicy(min_numel=8)}

    sequential, seq_fedavg = fit(False, fedavg_kwargs=codecs())
    vectorized, vec_fedavg = fit(True, fedavg_kwargs=codecs())
    assert_same_state(sequential, vectorized)
    assert vec_fedavg.uplink_bytes_total == seq_fedavg.uplink_bytes_total
    assert vec_fedavg.downlink_bytes_total == seq_fedavg.downlink_bytes_total


class Boring(BoringModel):
    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def boring_dm() -> FederatedDataModule:
    # a map-style dataset of plain tensors: batches are collated per client, then stacked
    return FederatedDataModule(RandomDataset(32, 42), partitioner=IIDPartitioner(num_clients=4, seed=0),
                               clients_per_round=3, batch_size=4)


def test_lightning_boring_model_on_a_map_style_dataset_equals_sequential():
    torch.manual_seed(0)
    sequential, _ = fit(False, Boring, boring_dm, rounds=2)
    vectorized, _ = fit(True, Boring, boring_dm, rounds=2)
    assert_same_state(sequential, vectorized)


def test_float32_equals_sequential_within_tolerance():
    dm_fn = partial(make_dm, double=False)
    sequential, _ = fit(False, dm_fn=dm_fn, precision="32-true")
    vectorized, _ = fit(True, dm_fn=dm_fn, precision="32-true")
    assert_same_state(sequential, vectorized)


class Frozen(TinyClassifier):
    """A frozen first layer: its stacked copies take no gradient, and its unchanged update is not sent."""

    def __init__(self) -> None:
        super().__init__()
        self.net[0].requires_grad_(False)


class Tied(TinyClassifier):
    """Two layers sharing one weight: every alias of a tied tensor sees the client's slot."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
        self.net[2].weight = self.net[0].weight


@pytest.mark.parametrize("model_fn", [Frozen, Tied])
def test_frozen_and_tied_parameters_equal_sequential(model_fn):
    sequential, seq_fedavg = fit(False, model_fn)
    vectorized, vec_fedavg = fit(True, model_fn)
    assert_same_state(sequential, vectorized)
    assert vec_fedavg.uplink_bytes_total == seq_fedavg.uplink_bytes_total


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize(("model_fn", "dm_fn"), [
    (TinyClassifier, make_dm),
    (partial(ClassifierModule, backbone=SmallCNN(1, 3, image_size=8, channels=(3, 4)), num_classes=3), image_dm),
    (partial(Optimized, "adam"), skewed),
], ids=["mlp", "cnn-batchnorm", "adam-skewed"])
def test_vectorized_equals_sequential_on_cuda(model_fn, dm_fn):
    """On a GPU, with the chunk size chosen from free memory (max_parallel_clients=None)."""
    sequential, _ = fit(False, model_fn, dm_fn, accelerator="gpu", devices=1)
    vectorized, fedavg = fit(True, model_fn, dm_fn, accelerator="gpu", devices=1)
    assert fedavg.vectorized
    assert 1 <= fedavg._cohort_size <= dm_fn().partitioner.num_clients
    assert_same_state(sequential.cpu(), vectorized.cpu())


class AnyOptimizer(TinyClassifier):
    """TinyClassifier with one of the other elementwise optimizers, and an epoch-interval scheduler."""

    def __init__(self, optimizer: str) -> None:
        super().__init__()
        self.optimizer_name = optimizer

    def configure_optimizers(self) -> Any:
        cls = getattr(torch.optim, self.optimizer_name)
        optimizer = cls(self.parameters(), lr=0.01, weight_decay=0.001)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


@pytest.mark.parametrize("optimizer", ["AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam"])
def test_every_elementwise_optimizer_and_an_epoch_scheduler_equal_sequential(optimizer):
    sequential, _ = fit(False, partial(AnyOptimizer, optimizer), skewed)
    vectorized, fedavg = fit(True, partial(AnyOptimizer, optimizer), skewed, fedavg_kwargs={"max_parallel_clients": 4})
    assert fedavg.vectorized
    assert_same_state(sequential, vectorized)


def test_robust_aggregator_and_server_optimizer_equal_sequential():
    def kwargs() -> dict[str, Any]:
        return {"aggregator": CoordinateMedianAggregator(), "server_optimizer": ServerAdam(lr=0.05)}

    sequential, _ = fit(False, dm_fn=skewed, fedavg_kwargs=kwargs())
    vectorized, fedavg = fit(True, dm_fn=skewed, fedavg_kwargs=kwargs())
    assert fedavg.vectorized
    assert_same_state(sequential, vectorized)
