"""Shared helpers of the vectorized-cohort tests: one fit in each mode on the same data, compared tensor by tensor."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, make_tiny_data, quiet_trainer_kwargs

from lightning_fl import FederatedAveraging, FederatedDataModule
from lightning_fl.datamodules import DirichletPartitioner, InMemoryDataset


def make_dm(n: int = 96, clients: int = 6, per_round: int = 4, batch_size: int = 8, local_epochs: int = 1,
            partitioner: Any = None, double: bool = True, **kwargs: Any) -> FederatedDataModule:
    train = make_tiny_data(n, seed=0)
    if double:
        train = InMemoryDataset(train.tensors[0].double(), train.tensors[1])
    partitioner = partitioner or DirichletPartitioner(num_clients=clients, alpha=1.0, seed=0)
    return FederatedDataModule(train, partitioner=partitioner, clients_per_round=per_round, batch_size=batch_size,
                               local_epochs=local_epochs, seed=5, **kwargs)


def fit(vectorize: Any, model_fn=TinyClassifier, dm_fn=make_dm, rounds: int = 3, fedavg_kwargs=None,
        callbacks=(), **trainer_kwargs: Any) -> tuple[pl.LightningModule, FederatedAveraging]:
    """One fit (float64 unless told otherwise) from the same initial weights."""
    torch.manual_seed(0)
    model = model_fn()
    fedavg = FederatedAveraging(vectorize=vectorize, **(fedavg_kwargs or {}))
    trainer_kwargs.setdefault("precision", "64-true")
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[fedavg, *callbacks], **trainer_kwargs))
    trainer.fit(model, datamodule=dm_fn())
    return model, fedavg


def assert_same_state(a: pl.LightningModule, b: pl.LightningModule, atol: float = 1e-5) -> None:
    """Every state_dict tensor equal (BatchNorm running statistics and counters included)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        torch.testing.assert_close(sa[name], sb[name], rtol=0, atol=atol, msg=lambda m, name=name: f"{name}: {m}")
