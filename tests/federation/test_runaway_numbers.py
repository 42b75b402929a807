"""Runaway numbers: a non-finite aggregate or server step is refused for its round, and an overflowing update after
the algorithms changed it is rejected; the global model and the server optimizer stay finite and unchanged."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, quiet_trainer_kwargs

from lightning_fl import FederatedAveraging, FederatedDataModule, MaliciousClients
from lightning_fl.datamodules import IIDPartitioner
from lightning_fl.federation.algorithm import ClientContext, FederatedAlgorithm
from lightning_fl.server import ServerAdam


class OneHugeEntry(FederatedAlgorithm):
    """Each client's update gets one finite entry of 1e37: every update sums to a finite number, their weighted
    sum (weights of 15 samples) does not."""

    def on_client_update(self, client: ClientContext, update: torch.Tensor, views: list[torch.Tensor]) -> None:
        update[0] = 1e37


class NaNAfterAdam(ServerAdam):
    """A server optimizer whose step leaves NaN in the model after updating its own moments."""

    def __init__(self, bad_steps: tuple[int, ...]) -> None:
        super().__init__(lr=0.05)
        self.bad_steps = bad_steps
        self.calls = 0

    def _apply(self, weights: torch.Tensor, delta: torch.Tensor) -> None:
        super()._apply(weights, delta)
        if self.calls in self.bad_steps:
            weights[3] = float("nan")
        self.calls += 1


def fit(tiny_data, *callbacks, server_optimizer=None, rounds=2):
    torch.manual_seed(0)
    model = TinyClassifier()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=8, seed=0), clients_per_round=3,
                             batch_size=5, seed=5)
    fedavg = FederatedAveraging(server_optimizer=server_optimizer)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[fedavg, *callbacks]))
    trainer.fit(model, datamodule=dm)
    return model, fedavg, start


def test_overflowing_aggregate_is_refused_and_the_model_kept(tiny_data):
    with pytest.warns(RuntimeWarning, match=r"round 0 was refused: the aggregated update contains NaN or Inf"):
        model, fedavg, start = fit(tiny_data, OneHugeEntry())
    assert [h["fl/rejected_rounds"] for h in fedavg.history] == [1.0, 1.0]
    assert [h["fl/rejected_updates"] for h in fedavg.history] == [0.0, 0.0]
    assert fedavg.rejected_rounds_total == 2 and fedavg.state_dict()["rejected_rounds_total"] == 2
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, start[name]), name


def test_non_finite_server_step_is_undone_with_the_optimizer_state(tiny_data):
    # the step of round 1 leaves NaN: the model and Adam's moments after round 1 must equal those of a run that
    # stopped after round 0
    with pytest.warns(RuntimeWarning, match=r"round 1 was refused: the global model after the server step"):
        broken, broken_cb, _ = fit(tiny_data, server_optimizer=NaNAfterAdam(bad_steps=(1,)), rounds=2)
    assert [h["fl/rejected_rounds"] for h in broken_cb.history] == [0.0, 1.0]
    assert broken_cb.server_optimizer.steps == 1
    one_round, one_cb, _ = fit(tiny_data, server_optimizer=ServerAdam(lr=0.05), rounds=1)
    for name, tensor in broken.state_dict().items():
        assert torch.equal(tensor, one_round.state_dict()[name]), name
    for key, tensor in one_cb.server_optimizer.state.items():
        assert torch.equal(broken_cb.server_optimizer.state[key], tensor), key
    assert one_cb.rejected_rounds_total == 0


def test_attack_scaling_updates_by_1e38_leaves_a_finite_model_and_counts_the_event(tiny_data):
    attack = MaliciousClients(fraction=0.5, attack="scale", scale=1e38, seed=0)
    with pytest.warns(RuntimeWarning, match=r"refused|not finite"):
        model, fedavg, _ = fit(tiny_data, attack)
    events = sum(h["fl/rejected_updates"] + h["fl/rejected_rounds"] for h in fedavg.history)
    assert events > 0
    assert all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


class InfForEvenClients(FederatedAlgorithm):
    """Turns the update of every even client into Inf after the client's own check (as a broken algorithm might)."""

    def on_client_update(self, client: ClientContext, update: torch.Tensor, views: list[torch.Tensor]) -> None:
        if client.client_id % 2 == 0:
            update[1] = float("inf")


def test_update_made_non_finite_by_an_algorithm_is_rejected_by_the_server(tiny_data):
    with pytest.warns(RuntimeWarning, match=r"is not finite .* dropped from the average"):
        model, fedavg, start = fit(tiny_data, InfForEvenClients())
    dm = fedavg._dm
    even = [sum(1 for c in dm.plan_round(r).clients if c % 2 == 0) for r in range(2)]
    assert [h["fl/rejected_updates"] for h in fedavg.history] == [float(n) for n in even]
    assert [h["fl/rejected_rounds"] for h in fedavg.history] == [0.0, 0.0]
    assert all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())
    assert any(not torch.equal(t, start[k]) for k, t in model.state_dict().items())


def test_a_refused_round_keeps_scaffolds_server_control(tiny_data):
    from lightning_fl import Scaffold

    with pytest.warns(RuntimeWarning, match=r"round 1 was refused"):
        fit(tiny_data, broken := Scaffold(), server_optimizer=NaNAfterAdam(bad_steps=(1,)), rounds=2)
    fit(tiny_data, one_round := Scaffold(), server_optimizer=ServerAdam(lr=0.05), rounds=1)
    assert broken.server_control is not None and one_round.server_control is not None
    assert bool(one_round.server_control.abs().sum() > 0)
    assert torch.equal(broken.server_control, one_round.server_control)
