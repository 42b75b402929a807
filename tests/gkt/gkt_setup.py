"""Tiny FedGKT runs shared by the tests in this folder: 1x8x8 random images, 3 classes, ResNet-8 and ResNet-11."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from conftest import quiet_trainer_kwargs

from lightning_fl.datamodules import FederatedDataModule, IIDPartitioner, InMemoryDataset
from lightning_fl.gkt import FedGKTModule, ResNet8Client, ResNetServerBody

NUM_CLASSES = 3


def image_data(n: int, seed: int) -> InMemoryDataset:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    x = torch.randn(n, 1, 8, 8, generator=gen) + y.view(-1, 1, 1, 1).float()
    return InMemoryDataset(x, y)


def make_dm(num_clients: int = 4, clients_per_round: int = 2, **kwargs: Any) -> FederatedDataModule:
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("seed", 3)
    return FederatedDataModule(image_data(48, 0), image_data(24, 1), partitioner=IIDPartitioner(num_clients, seed=0),
                               clients_per_round=clients_per_round, eval_batch_size=16, **kwargs)


def make_module(cls: type[FedGKTModule] = FedGKTModule, model_seed: int = 0, **kwargs: Any) -> FedGKTModule:
    torch.manual_seed(model_seed)
    kwargs.setdefault("client_lr", 0.01)
    kwargs.setdefault("server_batch_size", 16)
    return cls(client=ResNet8Client(1, NUM_CLASSES), server_body=ResNetServerBody(11, NUM_CLASSES),
               num_classes=NUM_CLASSES, eval_batch_size=16, **kwargs)


def trainer(max_epochs: int, **overrides: Any) -> pl.Trainer:
    return pl.Trainer(**quiet_trainer_kwargs(max_epochs=max_epochs, **overrides))


@contextmanager
def one_thread() -> Iterator[None]:
    """Run with one intra-op thread: these models are tiny, and with other processes busy two threads thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
