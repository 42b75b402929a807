"""Trainer(fast_dev_run=n) runs one federated round in which every sampled client trains n batches."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import LinearLoss, quiet_trainer_kwargs

from lightning_fl import FederatedAveraging, FederatedDataModule
from lightning_fl.datamodules import InMemoryDataset, NaturalPartitioner

LR = 0.5


def linear_dm() -> FederatedDataModule:
    # 4 clients of 5 samples, batches of 2: 3 batches per client in a full round
    x = torch.arange(40, dtype=torch.float32).reshape(20, 2) / 10 - 1.0
    data = InMemoryDataset(x, torch.zeros(20, dtype=torch.int64), groups=np.repeat(np.arange(4), 5))
    return FederatedDataModule(data, partitioner=NaturalPartitioner(), clients_per_round=3, batch_size=2, seed=1)


@pytest.mark.parametrize("fast_dev_run", [True, 2])
def test_one_round_of_n_batches_per_client(fast_dev_run):
    model, dm = LinearLoss(lr=LR), linear_dm()
    server = FederatedAveraging()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=5, fast_dev_run=fast_dev_run, callbacks=[server]))
    trainer.fit(model, datamodule=dm)
    n = int(fast_dev_run)
    plan = dm.plan_round(0, max_client_batches=n)
    assert server.rounds_completed == 1 and trainer.current_epoch == 1
    assert trainer.global_step == n * len(plan.clients) == len(plan.batches)
    # LinearLoss's gradient is the batch sum whatever w is: client k moves by -lr * (sum of its first n batches)
    x = dm.train_dataset.tensors[0]
    moves = {k: torch.zeros(2) for k in plan.clients.tolist()}
    for client, batch in zip(plan.batch_client.tolist(), plan.batches, strict=True):
        moves[client] -= LR * x[batch].sum(0)
    sizes = dm.client_sizes
    expected = sum(float(sizes[k]) * moves[k] for k in moves) / float(sum(sizes[k] for k in moves))
    torch.testing.assert_close(model.w.detach(), expected)
