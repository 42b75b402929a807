"""DP-FedAvg: clipping bounds every client, the noise is what the seed says, epsilon is Opacus's own answer."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, make_tiny_data, quiet_trainer_kwargs
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_fl import (
    DifferentialPrivacy,
    FederatedAlgorithm,
    FederatedAveraging,
    FederatedConfigError,
    FederatedDataModule,
)
from lightning_fl.datamodules import IIDPartitioner
from lightning_fl.seeding import generator
from lightning_fl.server import CoordinateMedianAggregator

CLIENTS, PER_ROUND, SEED = 6, 3, 4


def make_dm(data=None, **kwargs: Any) -> FederatedDataModule:
    data = data if data is not None else make_tiny_data(120, seed=0)
    return FederatedDataModule(data, partitioner=IIDPartitioner(num_clients=CLIENTS, seed=0),
                               clients_per_round=PER_ROUND, batch_size=5, seed=SEED, **kwargs)


class NormProbe(FederatedAlgorithm):
    def __init__(self, order: int) -> None:
        super().__init__()
        self.order = order  # type: ignore[misc]
        self.norms: list[float] = []
        self.weights: list[float] = []

    def on_client_update(self, client, update, views):
        self.norms.append(float(update.norm()))

    def client_weight(self, client, weight):
        self.weights.append(weight)
        return weight


def fit(callbacks, rounds=2, model=None, dm=None, **kwargs):
    torch.manual_seed(0)
    model = model if model is not None else TinyClassifier(momentum=0.0, lr=0.5)
    start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=callbacks, **kwargs))
    trainer.fit(model, datamodule=dm if dm is not None else make_dm())
    return model, start


def test_clipping_bounds_every_clients_contribution():
    before, after = NormProbe(order=15), NormProbe(order=100)
    dp = DifferentialPrivacy(clip_norm=0.1, noise_multiplier=0.0)
    model, start = fit([FederatedAveraging(), before, dp, after], rounds=1)
    assert max(before.norms) > 0.1  # the raw updates were larger than C ...
    assert max(after.norms) <= 0.1 * (1 + 1e-6)  # ... every contribution is at most C
    assert all(abs(a - min(b, 0.1)) < 1e-6 for a, b in zip(after.norms, before.norms, strict=True))
    assert after.weights == [1.0] * PER_ROUND  # clients weigh equally
    change = torch.cat([p.detach().flatten() for p in model.parameters()]) - start
    assert float(change.norm()) <= 0.1 * (1 + 1e-6)  # so does their mean


class Frozen(pl.LightningModule):
    """Its loss has zero gradient: client updates are exactly zero, the global change is the noise alone."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4000))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.w.sum() * 0.0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_noise_is_gaussian_with_std_z_c_over_clients_from_the_round_seed():
    z, c = 2.0, 0.5
    model, _ = fit([FederatedAveraging(), DifferentialPrivacy(clip_norm=c, noise_multiplier=z)], rounds=1,
                   model=Frozen())
    expected = torch.randn(4000, generator=generator(SEED, "dp", 0)) * (z * c) / PER_ROUND
    torch.testing.assert_close(model.w.detach(), expected)
    assert float(model.w.std()) == pytest.approx(z * c / PER_ROUND, rel=0.05)


@pytest.mark.parametrize(("z", "sampling"), [(1.1, "uniform"), (0.7, "all")])
def test_epsilon_is_the_accountants_own_answer(z, sampling):
    fedavg, dp = FederatedAveraging(), DifferentialPrivacy(clip_norm=1.0, noise_multiplier=z, delta=1e-5)
    fit([fedavg, dp], rounds=3, dm=make_dm(client_sampling=sampling))
    q = 1.0 if sampling == "all" else PER_ROUND / CLIENTS
    accountant = RDPAccountant()
    expected = []
    for _ in range(3):
        accountant.step(noise_multiplier=z, sample_rate=q)
        expected.append(accountant.get_epsilon(delta=1e-5))
    assert [h["dp/epsilon"] for h in fedavg.history] == expected
    rdp = rdp_analysis.compute_rdp(q=q, noise_multiplier=z, steps=3, orders=RDPAccountant.DEFAULT_ALPHAS)
    eps, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=1e-5)
    assert dp.epsilon == pytest.approx(eps, rel=1e-12) and expected[0] < expected[1] < expected[2]


def run_for_resume(tmp_path, max_epochs, ckpt_path=None):
    torch.manual_seed(0)
    model, dp = TinyClassifier(), DifferentialPrivacy(clip_norm=0.5, noise_multiplier=1.0)
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                           auto_insert_metric_name=False)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=max_epochs, enable_checkpointing=True,
                                                callbacks=[FederatedAveraging(), dp, ckpt]))
    trainer.fit(model, datamodule=make_dm(), ckpt_path=ckpt_path)
    return model, dp


def test_resume_continues_noise_and_accounting(tmp_path):
    full_model, full = run_for_resume(tmp_path / "full", 3)
    run_for_resume(tmp_path / "part", 1)
    resumed_model, resumed = run_for_resume(tmp_path / "resumed", 3, str(tmp_path / "part" / "round0.ckpt"))
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed.epsilon == full.epsilon and resumed.accountant.history == [(1.0, 0.5, 3)]


def test_configurations_dp_cannot_account_for_are_refused():
    with pytest.raises(FederatedConfigError, match="needs FederatedAveraging\\(aggregation='selected'\\), got 'all'"):
        fit([FederatedAveraging(aggregation="all"), DifferentialPrivacy()], rounds=1)
    with pytest.raises(FederatedConfigError, match=r"needs a mean aggregator .*got CoordinateMedianAggregator"):
        fit([FederatedAveraging(aggregator=CoordinateMedianAggregator()), DifferentialPrivacy()], rounds=1)
    with pytest.raises(FederatedConfigError, match="client_sampling must be 'uniform' or 'all', got 'size'"):
        fit([FederatedAveraging(), DifferentialPrivacy()], rounds=1, dm=make_dm(client_sampling="size"))
    with pytest.raises(FederatedConfigError, match="clip_norm must be a finite number > 0, got 0"):
        DifferentialPrivacy(clip_norm=0)
    with pytest.raises(FederatedConfigError, match=r"delta must be in \(0, 1\), got 1"):
        DifferentialPrivacy(delta=1)
