"""Aggregation semantics against hand-computed values, server optimizers, and rejected updates."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import LinearLoss, TinyClassifier, make_tiny_data, quiet_trainer_kwargs

from lightning_fl import FederatedAveraging, FederatedDataModule
from lightning_fl.datamodules import InMemoryDataset, ShardPartitioner
from lightning_fl.datamodules.plan import sample_clients
from lightning_fl.server import ServerAdam, ServerSGD

LR = 0.5




def linear_data() -> InMemoryDataset:
    x = torch.arange(24, dtype=torch.float32).reshape(12, 2) / 10
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    return InMemoryDataset(x, y)


@pytest.mark.parametrize("aggregation", ["selected", "all"])
def test_selected_and_all_match_hand_computation(aggregation):
    data = linear_data()
    # shards of one label each: clients hold 3, 3, 3, 3 samples; 2 of 4 clients per round
    dm = FederatedDataModule(data, partitioner=ShardPartitioner(num_clients=4, shards_per_client=1, seed=0),
                             clients_per_round=2, batch_size=2, seed=3)
    model = LinearLoss(lr=LR)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=[FederatedAveraging(aggregation)]))
    trainer.fit(model, datamodule=dm)
    x = data.tensors[0].numpy()
    clients = sample_clients(0, dm.client_sizes, 2, "uniform", seed=3)
    deltas = {c: -LR * x[dm.client_indices[c]].sum(axis=0) for c in clients}
    n = {c: len(dm.client_indices[c]) for c in clients}
    weighted = sum(n[c] * deltas[c] for c in clients)
    denom = sum(n.values()) if aggregation == "selected" else 12
    np.testing.assert_allclose(model.w.detach().numpy(), weighted / denom, rtol=1e-6)


def test_all_equals_selected_scaled_by_sampled_fraction(tiny_data):
    results = {}
    for aggregation in ("selected", "all"):
        torch.manual_seed(0)
        model = TinyClassifier(momentum=0.0)
        start = [p.detach().clone() for p in model.parameters()]
        dm = FederatedDataModule(*tiny_data, clients_per_round=3,
                                 partitioner=ShardPartitioner(num_clients=6, shards_per_client=1), seed=1)
        trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=[FederatedAveraging(aggregation)]))
        trainer.fit(model, datamodule=dm)
        results[aggregation] = [p.detach() - s for p, s in zip(model.parameters(), start, strict=False)]
        sizes = dm.client_sizes
        scale = sizes[dm.current_plan.clients].sum() / sizes.sum()
    for sel, all_ in zip(results["selected"], results["all"], strict=False):
        torch.testing.assert_close(all_, sel * float(scale))


def test_server_momentum_and_adam_change_the_trajectory(tiny_data):
    finals = []
    for opt in (ServerSGD(lr=1.0), ServerSGD(lr=1.0, momentum=0.9), ServerAdam(lr=0.01)):
        torch.manual_seed(0)
        model = TinyClassifier()
        dm = FederatedDataModule(*tiny_data, clients_per_round=3,
                                 partitioner=ShardPartitioner(num_clients=6, shards_per_client=1))
        trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=3, callbacks=[FederatedAveraging(server_optimizer=opt)]))
        trainer.fit(model, datamodule=dm)
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert opt.steps == 3
    assert not torch.equal(finals[0], finals[1]) and not torch.equal(finals[0], finals[2])


class NaNForClient(pl.Callback):
    """Poison the weights of one client right before its update is computed."""

    def __init__(self, fedavg: FederatedAveraging, client: int) -> None:
        self.fedavg, self.client = fedavg, client

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        plan = trainer.datamodule.current_plan
        if plan.batch_client[batch_idx] == self.client and plan.last[batch_idx]:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


def test_nonfinite_update_is_dropped_counted_and_warned_once(tiny_data):
    torch.manual_seed(0)
    model = TinyClassifier()
    dm = FederatedDataModule(*tiny_data, clients_per_round=6, client_sampling="all",
                             partitioner=ShardPartitioner(num_clients=6, shards_per_client=1))
    fedavg = FederatedAveraging()
    poison = NaNForClient(fedavg, client=2)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=2, callbacks=[poison, fedavg]))
    with pytest.warns(RuntimeWarning, match="NaN or Inf") as record:
        trainer.fit(model, datamodule=dm)
    assert sum("NaN or Inf" in str(w.message) for w in record) == 1
    assert [h["fl/rejected_updates"] for h in fedavg.history] == [1.0, 1.0]
    assert [h["fl/clients"] for h in fedavg.history] == [5.0, 5.0]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_batchnorm_buffers_are_averaged_and_counters_summed():
    torch.manual_seed(0)
    model = TinyClassifier(batchnorm=True)
    data = make_tiny_data(60)
    dm = FederatedDataModule(data, clients_per_round=2, batch_size=10,
                             partitioner=ShardPartitioner(num_clients=3, shards_per_client=1))
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=[FederatedAveraging()]))
    trainer.fit(model, datamodule=dm)
    bn = model.net[1]
    # every client runs ceil(20 / 10) = 2 batches; the global counter sums the increments of both clients
    assert int(bn.num_batches_tracked) == 4
    assert bn.num_batches_tracked.dtype == torch.int64
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
