"""SystemsSimulation inside a fit: equals FedAvg when nothing is simulated away, trains exactly the clients the
clock keeps, FedNova in closed form, failed rounds, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import LinearLoss, TinyClassifier, make_tiny_data, quiet_trainer_kwargs
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_fl import FedBuff, FederatedAveraging, FederatedConfigError, FederatedDataModule, SystemsSimulation
from lightning_fl.datamodules import IIDPartitioner, InMemoryDataset, QuantitySkewPartitioner
from lightning_fl.federation.algorithm import ClientContext, FederatedAlgorithm
from lightning_fl.systems import ClientProfiles, step_samples


class TrainedClients(FederatedAlgorithm):
    """Records which clients actually train in each round."""

    order = 100

    def __init__(self) -> None:
        super().__init__()
        self.rounds: dict[int, list[int]] = {}

    def on_client_start(self, client: ClientContext) -> None:
        self.rounds.setdefault(client.round_idx, []).append(client.client_id)


def make_dm(num_clients=6, per_round=3, partitioner=None, **kwargs) -> FederatedDataModule:
    partitioner = partitioner or IIDPartitioner(num_clients=num_clients, seed=0)
    return FederatedDataModule(make_tiny_data(120), make_tiny_data(60, seed=1), partitioner=partitioner,
                               clients_per_round=per_round, batch_size=5, local_epochs=2, seed=3, **kwargs)


def fit(callbacks, dm, rounds=3, model=None, **kwargs):
    torch.manual_seed(0)
    model = model if model is not None else TinyClassifier()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=callbacks, **kwargs))
    trainer.fit(model, datamodule=dm)
    return model


def test_homogeneous_devices_without_deadline_equal_fedavg_and_the_clock_is_by_hand():
    plain = fit([FederatedAveraging()], make_dm())
    fedavg, sim, seen = FederatedAveraging(), SystemsSimulation("homogeneous", fednova=True), TrainedClients()
    dm = make_dm()
    simulated = fit([fedavg, sim, seen], dm)
    for a, b in zip(plain.state_dict().values(), simulated.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # equal client sizes: equal steps, FedNova factors exactly 1
    for round_idx, metrics in enumerate(sim.history):
        clients = seen.rounds[round_idx]
        per_client = fedavg.history[round_idx]["fl/downlink_bytes"] / len(clients)
        # homogeneous: 1e6 bytes/s both ways, 1e9 FLOP/s
        by_hand = max(2 * per_client / 1e6 + sim.flops_per_sample * step_samples(int(dm.client_sizes[c]), 5, 2).sum()
                      / 1e9 for c in clients)
        assert metrics["fl/sim_seconds"] == pytest.approx(by_hand, rel=1e-12)
        assert metrics["fl/stragglers"] == metrics["fl/dropped"] == metrics["fl/failed"] == 0
    assert sim.sim_seconds_total == pytest.approx(sum(m["fl/sim_seconds"] for m in sim.history))
    assert sim.flops_per_sample > 0 and sim.energy_joules_total > 0


def test_only_the_clients_the_clock_keeps_train():
    sim, seen = SystemsSimulation("phones", deadline=0.03, over_selection=0.5), TrainedClients()
    fedavg = FederatedAveraging()
    dm = make_dm(num_clients=12, per_round=4)
    schedules = []

    class Keep(FederatedAlgorithm):
        def on_round_end(self, trainer, round_context):
            schedules.append(sim.last_schedule)
            return {}

    fit([fedavg, sim, seen, Keep()], dm, rounds=6)
    for r, schedule in enumerate(schedules):
        assert sorted(seen.rounds.get(r, [])) == schedule.clients.tolist()
        assert fedavg.history[r]["fl/clients"] == len(schedule.clients) <= 4
    history = sim.history
    assert sum(m["fl/dropped"] + m["fl/failed"] + m["fl/discarded"] for m in history) > 0  # something was simulated
    assert [m["fl/sim_seconds"] for m in history] == [s.round_seconds for s in schedules]


def test_fednova_normalizes_unequal_local_work_in_closed_form():
    # LinearLoss: every step's gradient is the sum of its batch's x, whatever w is, so updates are known exactly
    gen = torch.Generator().manual_seed(0)
    data = InMemoryDataset(torch.randn(60, 2, generator=gen), torch.zeros(60, dtype=torch.long))
    dm = FederatedDataModule(data, partitioner=QuantitySkewPartitioner(num_clients=4, sigma=0.5, seed=0),
                             clients_per_round=4, batch_size=3, local_epochs=2, shuffle=False, seed=0)
    speeds = [1e6, 2e5, 1e5, 5e4]  # FLOP/s: the slow clients get fewer steps
    profiles = ClientProfiles(flops_per_second=speeds, downlink_bytes_per_second=[1e9] * 4,
                              uplink_bytes_per_second=[1e9] * 4)
    sim = SystemsSimulation(profiles, deadline=0.5, dynamic_work=True, fednova=True, flops_per_sample=1e4)
    model = LinearLoss(lr=0.1)
    fit([FederatedAveraging(), sim], dm, rounds=1, model=model)
    schedule = sim.last_schedule
    assert len(set(schedule.local_steps.tolist())) > 1
    x = data.tensors[0].double()
    sizes = dm.client_sizes[schedule.clients].astype(np.float64)
    p = sizes / sizes.sum()
    tau_eff = float((p * schedule.local_steps).sum())
    expected = torch.zeros(2, dtype=torch.float64)
    for c, tau, p_c in zip(schedule.clients, schedule.local_steps, p, strict=True):
        batches = [dm.client_indices[c][i : i + 3] for i in range(0, len(dm.client_indices[c]), 3)] * 2
        update = -0.1 * sum(x[b].sum(0) for b in batches[:tau])
        expected += p_c * tau_eff / tau * update
    np.testing.assert_allclose(model.w.detach().double().numpy(), expected.numpy(), rtol=1e-5)


def test_a_round_where_every_client_fails_keeps_the_global_model():
    profiles = ClientProfiles(flops_per_second=[1e9] * 6, downlink_bytes_per_second=[1e6] * 6,
                              uplink_bytes_per_second=[1e6] * 6, failure_probability=[1.0] * 6)
    sim = SystemsSimulation(profiles)
    torch.manual_seed(0)
    model = TinyClassifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(RuntimeWarning, match="no client update reached the server"):
        fit([FederatedAveraging(), sim], make_dm(), rounds=2, model=model)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert [m["fl/failed"] for m in sim.history] == [3.0, 3.0]
    assert all(m["fl/energy_joules"] > 0 for m in sim.history)  # downloads and partial training still cost


def run_resumable(tmp_path, rounds, ckpt_path=None):
    sim = SystemsSimulation("phones", deadline=0.02, over_selection=0.3, stragglers="partial", fednova=True)
    fedavg = FederatedAveraging()
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                           auto_insert_metric_name=False)
    torch.manual_seed(0)
    model = TinyClassifier()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[fedavg, sim, ckpt],
                                                enable_checkpointing=True))
    trainer.fit(model, datamodule=make_dm(num_clients=12, per_round=4), ckpt_path=ckpt_path)
    return model, sim


def test_same_seed_same_events_and_exact_resume(tmp_path):
    full, full_sim = run_resumable(tmp_path / "full", 5)
    _, again_sim = run_resumable(tmp_path / "again", 5)
    assert full_sim.history == again_sim.history
    run_resumable(tmp_path / "part", 2)
    resumed, resumed_sim = run_resumable(tmp_path / "resumed", 5, ckpt_path=str(tmp_path / "part" / "round1.ckpt"))
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed_sim.history == full_sim.history[2:]
    assert resumed_sim.sim_seconds_total == full_sim.sim_seconds_total
    assert resumed_sim.energy_joules_total == full_sim.energy_joules_total


def test_misuse_is_refused():
    with pytest.raises(FederatedConfigError, match="participation hook is already taken by SystemsSimulation"):
        fit([FederatedAveraging(), SystemsSimulation("edge"), FedBuff(buffer_size=2)], make_dm(), rounds=1)
    with pytest.raises(FederatedConfigError, match=r"over_selection=0\.5 needs a sampled subset"):
        fit([FederatedAveraging(), SystemsSimulation("edge", over_selection=0.5)], make_dm(client_sampling="all"),
            rounds=1)
    with pytest.raises(FederatedConfigError, match="num_clients=6, got 2 profiles"):
        fit([FederatedAveraging(), SystemsSimulation(ClientProfiles.preset("edge", 2))], make_dm(), rounds=1)
    with pytest.raises(FederatedConfigError, match=r"deadline must be a finite number > 0, got -1"):
        SystemsSimulation(deadline=-1)
    with pytest.raises(FederatedConfigError, match=r"stragglers must be one of \['drop', 'partial'\], got 'wait'"):
        SystemsSimulation(stragglers="wait")
    with pytest.raises(FederatedConfigError, match="min_local_steps must be an integer >= 1, got 0"):
        SystemsSimulation(deadline=1.0, min_local_steps=0)
    with pytest.raises(FederatedConfigError, match="needs a FederatedAveraging"):
        fit([SystemsSimulation()], make_dm(), rounds=1)


def run_on(tmp_path, devices):
    from lightning_fl import FederatedDDPStrategy

    sim = SystemsSimulation("phones", deadline=0.02, over_selection=0.5, stragglers="partial", fednova=True)
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_last=True)
    kwargs = {"strategy": FederatedDDPStrategy(start_method="spawn")} if devices > 1 else {}
    model = fit([FederatedAveraging(), sim, ckpt], make_dm(num_clients=12, per_round=4), rounds=3, devices=devices,
                enable_checkpointing=True, **kwargs)
    return model, torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]["SystemsSimulation"]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_plan_and_end_like_one(tmp_path):
    one, one_state = run_on(tmp_path / "one", 1)
    two, two_state = run_on(tmp_path / "two", 2)
    for name, tensor in one.state_dict().items():
        np.testing.assert_allclose(tensor.numpy(), two.state_dict()[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert one_state == two_state  # same clock, energy and payload estimates on every rank
