"""Algorithms see a round only through the contexts the runtime hands them, and declare their capabilities."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, quiet_trainer_kwargs

from lightning_fl import (
    FedBuff,
    FederatedAveraging,
    FederatedConfigError,
    FederatedDataModule,
    FederatedDropout,
    SystemsSimulation,
)
from lightning_fl.codecs import StochasticQuantizer, TensorPolicy
from lightning_fl.datamodules import DirichletPartitioner
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.context import ClientContext, RoundContext


def make_dm(tiny_data, **overrides) -> FederatedDataModule:
    kwargs = dict(partitioner=DirichletPartitioner(num_clients=6, alpha=1.0, seed=0), clients_per_round=3,
                  batch_size=8, local_epochs=2, seed=3)
    kwargs.update(overrides)
    return FederatedDataModule(*tiny_data, **kwargs)


def fit(tiny_data, callbacks, rounds=2, dm=None):
    torch.manual_seed(0)
    model = TinyClassifier()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=callbacks))
    trainer.fit(model, datamodule=dm if dm is not None else make_dm(tiny_data))
    return model


class Recorder(FederatedAlgorithm):
    """A third-party plug-in: records what its contexts say, checked afterwards against the plan and the metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.clients: list[tuple[int, int, int]] = []
        self.start_equals_module: list[bool] = []
        self.start_kept: list[bool] = []
        self.steps_seen: dict[tuple[int, int], int] = {}
        self.rounds: list[RoundContext] = []

    def on_client_start(self, client: ClientContext) -> None:
        self.clients.append((client.round_idx, client.client_id, client.num_batches))
        self.start_equals_module.append(
            all(torch.equal(p, s) for p, s in zip(client.params, client.start_weights, strict=True))
        )
        self._start_copy = [s.clone() for s in client.start_weights]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        client = self.context.round.client
        assert client is not None  # one process: no padding batch
        key = (client.round_idx, client.client_id)
        self.steps_seen[key] = self.steps_seen.get(key, 0) + 1

    def on_client_update(self, client: ClientContext, update: torch.Tensor, views: list[torch.Tensor]) -> None:
        assert self.context.round.client is client
        moved = any(not torch.equal(p, s) for p, s in zip(client.params, client.start_weights, strict=True))
        kept = all(torch.equal(a, b) for a, b in zip(self._start_copy, client.start_weights, strict=True))
        self.start_kept.append(moved and kept)

    def on_round_end(self, trainer: "pl.Trainer", round_context: RoundContext) -> dict[str, float]:
        self.rounds.append(round_context)
        assert self.context.round.client is None  # between clients
        return {}


def test_client_context_matches_the_plan_and_the_start_weights(tiny_data):
    dm = make_dm(tiny_data)
    recorder = Recorder()
    fit(tiny_data, [FederatedAveraging(), recorder], dm=dm)
    expected = []
    for round_idx in range(2):
        plan = dm.plan_round(round_idx)
        expected += [(round_idx, c, int((plan.batch_client == c).sum())) for c in plan.rank_clients]
    assert recorder.clients == expected
    assert {(r, c): n for r, c, n in expected} == recorder.steps_seen  # num_batches = the optimizer steps run
    assert all(recorder.start_equals_module) and len(recorder.start_equals_module) == 6
    assert all(recorder.start_kept) and len(recorder.start_kept) == 6  # trained away from an unchanged start


def test_round_context_counts_equal_the_logged_metrics(tiny_data):
    fedavg = FederatedAveraging(uplink=StochasticQuantizer(bits=4), policy=TensorPolicy(min_numel=1))
    recorder = Recorder()
    fit(tiny_data, [fedavg, recorder], rounds=3)
    assert [r.round_idx for r in recorder.rounds] == [0, 1, 2]
    for round_context, logged in zip(recorder.rounds, fedavg.history, strict=True):
        assert round_context.downlink_bytes == logged["fl/downlink_bytes"] > 0
        assert round_context.uplink_bytes == logged["fl/uplink_bytes"] > 0
        assert round_context.rejected == logged["fl/rejected_updates"] == 0
        assert round_context.senders == round_context.reported == logged["fl/clients"] == 3
        assert round_context.is_last == (round_context.round_idx == 2)


class FullSizeState(FederatedAlgorithm):
    """Keeps nothing shaped like the model, but says nothing about submodels either."""


class SubmodelAware(FederatedAlgorithm):
    supports_submodels = True

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def on_client_update(self, client: ClientContext, update: torch.Tensor, views: list[torch.Tensor]) -> None:
        self.sizes.append(update.numel())


def test_submodels_need_every_other_algorithm_to_declare_support(tiny_data):
    with pytest.raises(FederatedConfigError, match="FederatedDropout cannot be combined with FullSizeState: "
                                                   "FullSizeState does not declare supports_submodels"):
        fit(tiny_data, [FederatedAveraging(), FederatedDropout(keep=0.5), FullSizeState()], rounds=1)
    aware = SubmodelAware()
    fit(tiny_data, [FederatedAveraging(), FederatedDropout(keep=0.5), aware], rounds=1)
    full = sum(p.numel() for p in TinyClassifier().parameters())
    assert len(aware.sizes) == 3 and all(n < full for n in aware.sizes)  # it saw the clients' submodel updates


class SecondDropout(FederatedDropout):
    pass


class UndeclaredLayout(FederatedAlgorithm):
    def client_layout(self, pl_module, state, seed):
        return None


def test_submodels_are_declared_once(tiny_data):
    with pytest.raises(FederatedConfigError, match="only one algorithm may give clients submodels, got 2"):
        fit(tiny_data, [FederatedAveraging(), FederatedDropout(keep=0.5), SecondDropout(keep=0.5)], rounds=1)
    with pytest.raises(FederatedConfigError, match=r"UndeclaredLayout overrides client_layout\(\) but does not declare "
                                                   "provides_submodels = True"):
        fit(tiny_data, [FederatedAveraging(), UndeclaredLayout()], rounds=1)


class Watch(pl.Callback):
    """What the data module's plug-in attributes hold while the fit runs, and whose schedule the plan follows."""

    def __init__(self, sim: SystemsSimulation) -> None:
        self.sim = sim
        self.seen: list[tuple[object, bool, bool]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        dm, schedule = trainer.datamodule, self.sim.last_schedule
        follows = schedule is not None and np.array_equal(dm.current_plan.clients, schedule.clients)
        self.seen.append((dm.participation, dm.pin_clients_to_ranks, follows))


def test_participation_travels_in_the_plan_request_not_in_data_module_attributes(tiny_data):
    sim = SystemsSimulation("phones", deadline=0.02, stragglers="drop")
    watch = Watch(sim)
    fit(tiny_data, [FederatedAveraging(), sim, watch], rounds=3)
    assert watch.seen == [(None, False, True)] * 3


def test_two_algorithms_deciding_participation_are_refused(tiny_data):
    with pytest.raises(FederatedConfigError, match="SystemsSimulation and FedBuff both decide who trains each round"):
        fit(tiny_data, [FederatedAveraging(), SystemsSimulation("edge"), FedBuff(buffer_size=2)], rounds=1)
