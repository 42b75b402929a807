"""SCAFFOLD: variate updates against a hand-written loop, drift correction on a quadratic, checkpoint and resume."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import LinearLoss, quiet_trainer_kwargs
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_fl import FederatedAveraging, FederatedConfigError, FederatedDataModule, Scaffold
from lightning_fl.datamodules import InMemoryDataset, NaturalPartitioner
from lightning_fl.datamodules.plan import client_batches, sample_clients

LR, BATCH, SEED = 0.5, 2, 3




def linear_dm(per_round: int) -> FederatedDataModule:
    # 4 clients of 3 samples; batches of 2 make K = 2 local steps per client
    x = torch.arange(24, dtype=torch.float32).reshape(12, 2) / 10 - 0.5
    groups = np.repeat(np.arange(4), 3)
    data = InMemoryDataset(x, torch.zeros(12, dtype=torch.int64), groups=groups)
    return FederatedDataModule(data, partitioner=NaturalPartitioner(), clients_per_round=per_round, batch_size=BATCH,
                               shuffle=False, seed=SEED)


def scaffold_by_hand(dm: FederatedDataModule, rounds: int, per_round: int):
    """SCAFFOLD option II written out: corrected SGD steps, c_i+ = c_i - c + (x - y_i) / (K lr), c += sum dc_i / N."""
    x_all = dm.train_dataset.tensors[0]
    sizes, n = dm.client_sizes, dm.num_clients
    w, c, ci = torch.zeros(2), torch.zeros(2), {}
    for r in range(rounds):
        dw, weight, dc = torch.zeros(2), 0.0, torch.zeros(2)
        for k in sample_clients(r, sizes, per_round, "uniform", SEED).tolist():
            old = ci.get(k, torch.zeros(2))
            y = w.clone()
            batches = client_batches(dm.client_indices[k], BATCH, 1, False, SEED, r, k)
            for b in batches:
                y -= LR * (x_all[b].sum(0) + c - old)
            ci[k] = old - c + (w - y) / (len(batches) * LR)
            dc += ci[k] - old
            dw += float(sizes[k]) * (y - w)
            weight += float(sizes[k])
        w, c = w + dw / weight, c + dc / n
    return w, c, ci


def fit_linear(rounds: int, per_round: int, scaffold: Scaffold) -> tuple[LinearLoss, FederatedDataModule]:
    model, dm = LinearLoss(lr=LR), linear_dm(per_round)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[FederatedAveraging(), scaffold]))
    trainer.fit(model, datamodule=dm)
    return model, dm


def test_first_round_variates_are_the_mean_local_gradient():
    scaffold = Scaffold()
    _, dm = fit_linear(1, 4, scaffold)
    x_all = dm.train_dataset.tensors[0]
    means = {}
    for k in range(4):
        # c = c_i = 0 in round 0, so c_i+ = (x - y_i) / (K lr) = (lr * sum of batch gradients) / (K lr)
        means[k] = x_all[dm.client_indices[k]].sum(0) / 2
        torch.testing.assert_close(scaffold.client_controls.get(k), means[k])
    # all 4 of 4 clients took part: c = (|S|/N) mean(dc_i) = mean of the c_i
    torch.testing.assert_close(scaffold.server_control, sum(means.values()) / 4)


def test_variates_and_weights_match_the_hand_written_loop():
    scaffold = Scaffold()
    model, dm = fit_linear(4, 2, scaffold)
    w, c, ci = scaffold_by_hand(dm, 4, 2)
    torch.testing.assert_close(model.w.detach(), w)
    torch.testing.assert_close(scaffold.server_control, c)
    stored = dict(scaffold.client_controls.items())
    assert sorted(stored) == sorted(ci)
    for k, expected in ci.items():
        torch.testing.assert_close(stored[k], expected)
    assert scaffold.bytes_per_client == 8
    assert scaffold.client_controls.nbytes == 8 * len(ci)


class Quadratic(pl.LightningModule):
    """Sample (a, b) has loss a/2 ||w - b||^2: a client's optimum is its b, the global one sum a b / sum a."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        a, b = x[:, :1], x[:, 1:]
        return (0.5 * a * (self.w - b) ** 2).sum(1).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_scaffold_removes_the_client_drift_of_fedavg():
    # two clients with very different curvature (a = 1 and 8) and optima (0, 0) and (1, -1); 10 local steps
    a = torch.tensor([1.0] * 4 + [8.0] * 4)
    b = torch.tensor([[0.0, 0.0]] * 4 + [[1.0, -1.0]] * 4)
    data = InMemoryDataset(torch.cat([a[:, None], b], 1), torch.zeros(8, dtype=torch.int64),
                           groups=np.repeat([0, 1], 4))
    optimum = (a[:, None] * b).sum(0) / a.sum()
    errors = {}
    for name, extra in (("fedavg", []), ("scaffold", [Scaffold()])):
        dm = FederatedDataModule(data, partitioner=NaturalPartitioner(), client_sampling="all", batch_size=4,
                                 local_epochs=10, shuffle=False)
        model = Quadratic()
        trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=30, callbacks=[FederatedAveraging(), *extra]))
        trainer.fit(model, datamodule=dm)
        errors[name] = float((model.w.detach() - optimum).norm())
    # FedAvg's fixed point sum (1 - rho_i) b_i / sum (1 - rho_i), rho_i = (1 - lr a_i)^K, is far from the optimum
    rho = (1 - 0.05 * torch.tensor([1.0, 8.0])) ** 10
    drift_point = ((1 - rho)[:, None] * torch.tensor([[0.0, 0.0], [1.0, -1.0]])).sum(0) / (1 - rho).sum()
    assert errors["fedavg"] == pytest.approx(float((drift_point - optimum).norm()), rel=0.05)
    assert errors["scaffold"] < 0.01 < 0.2 < errors["fedavg"]


def run_for_resume(tmp_path, max_epochs, ckpt_path=None):
    torch.manual_seed(0)
    model, dm = LinearLoss(lr=LR), linear_dm(2)
    scaffold = Scaffold()
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                           auto_insert_metric_name=False)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=max_epochs, enable_checkpointing=True,
                                                callbacks=[FederatedAveraging(), scaffold, ckpt]))
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, scaffold


def test_resume_is_bit_identical(tmp_path):
    full_model, full = run_for_resume(tmp_path / "full", 5)
    run_for_resume(tmp_path / "part", 2)
    resumed_model, resumed = run_for_resume(tmp_path / "resumed", 5, ckpt_path=str(tmp_path / "part" / "round1.ckpt"))
    assert torch.equal(full_model.w, resumed_model.w)
    assert torch.equal(full.server_control, resumed.server_control)
    full_items, resumed_items = full.client_controls.items(), resumed.client_controls.items()
    assert [k for k, _ in full_items] == [k for k, _ in resumed_items]  # same clients, same recency order
    for (_, a), (_, b) in zip(full_items, resumed_items, strict=True):
        assert torch.equal(a, b)


def test_bounded_store_and_arguments():
    scaffold = Scaffold(max_clients=1)
    fit_linear(2, 2, scaffold)
    assert len(scaffold.client_controls) == 1
    with pytest.raises(FederatedConfigError, match="max_clients must be an integer >= 1, got 0"):
        Scaffold(max_clients=0)


def test_needs_the_server_callback():
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=[Scaffold()]))
    with pytest.raises(FederatedConfigError, match="Scaffold needs a FederatedAveraging callback"):
        trainer.fit(LinearLoss(lr=LR), datamodule=linear_dm(2))
