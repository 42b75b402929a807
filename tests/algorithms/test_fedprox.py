"""FedProx: mu = 0 is FedAvg; mu > 0 adds exactly mu * (w - w_start) to each gradient."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, quiet_trainer_kwargs

from lightning_fl import FederatedAlgorithm, FederatedAveraging, FederatedConfigError, FederatedDataModule, FedProx
from lightning_fl.datamodules import DirichletPartitioner


def fit(tiny_data, callbacks, rounds=2):
    torch.manual_seed(0)
    model = TinyClassifier()
    dm = FederatedDataModule(*tiny_data, partitioner=DirichletPartitioner(num_clients=6, alpha=1.0, seed=0),
                             clients_per_round=3, batch_size=8)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=callbacks))
    trainer.fit(model, datamodule=dm)
    return model


def test_mu_zero_is_exactly_fedavg(tiny_data):
    plain = fit(tiny_data, [FederatedAveraging()])
    prox = fit(tiny_data, [FederatedAveraging(), FedProx(mu=0.0)])
    for a, b in zip(plain.state_dict().values(), prox.state_dict().values(), strict=True):
        assert torch.equal(a, b)


class GradProbe(pl.Callback):
    def __init__(self) -> None:
        self.grads: list[list[torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads.append([p.grad.detach().clone() for p in pl_module.parameters()])


class ProxCheck(FederatedAlgorithm):
    """Runs after FedProx: the gradient grew by exactly mu * (w - w_start) (read from the client's context)."""

    def __init__(self, before: GradProbe, mu: float) -> None:
        super().__init__()
        self.before, self.mu, self.checked = before, mu, 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        client = self.context.round.client
        if client is None:
            return
        for p, s, g0 in zip(client.params, client.start_weights, self.before.grads[-1], strict=True):
            torch.testing.assert_close(p.grad - g0, self.mu * (p.detach() - s), rtol=1e-5, atol=1e-7)
        self.checked += 1


def test_gradient_change_equals_mu_times_distance_to_start(tiny_data):
    fedavg, probe = FederatedAveraging(), GradProbe()
    check = ProxCheck(probe, mu=0.5)
    model = fit(tiny_data, [fedavg, probe, FedProx(mu=0.5), check])
    assert check.checked > 10
    plain = fit(tiny_data, [FederatedAveraging()])
    assert not torch.equal(next(model.parameters()), next(plain.parameters()))


def test_bad_arguments():
    with pytest.raises(FederatedConfigError, match="mu must be a finite number >= 0, got -1"):
        FedProx(mu=-1)


def test_fedprox_needs_the_server_callback(tiny_data):
    with pytest.raises(FederatedConfigError, match="FedProx needs a FederatedAveraging callback"):
        fit(tiny_data, [FedProx(mu=0.1)])
