"""FedBuff inside a fit: synchronous FedAvg when nothing is stale; stale clients start from the version they
downloaded and count with their staleness weight; exact resume with versions in flight."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import LinearLoss, TinyClassifier, make_tiny_data, quiet_trainer_kwargs
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_fl import FedBuff, FederatedAveraging, FederatedConfigError, FederatedDataModule
from lightning_fl.datamodules import IIDPartitioner, InMemoryDataset, QuantitySkewPartitioner
from lightning_fl.federation.algorithm import ClientContext, FederatedAlgorithm

N = 6


def make_dm(per_round=N, data=None, partitioner=None) -> FederatedDataModule:
    val = make_tiny_data(30, seed=1) if data is None else None  # checkpoints after validation, as configs do
    return FederatedDataModule(data or make_tiny_data(120), val, partitioner=partitioner or IIDPartitioner(N, seed=0),
                               clients_per_round=per_round, batch_size=5, local_epochs=2, seed=3)


def fit(callbacks, dm, rounds=3, model=None, **kwargs):
    torch.manual_seed(0)
    model = model if model is not None else TinyClassifier()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=callbacks, **kwargs))
    trainer.fit(model, datamodule=dm)
    return model


def test_buffer_of_every_client_without_staleness_is_synchronous_fedavg():
    plain = fit([FederatedAveraging()], make_dm())
    fedbuff = FedBuff(buffer_size=N, concurrency=N, profiles="phones")
    buffered = fit([FederatedAveraging(), fedbuff], make_dm(per_round=2))  # clients_per_round is not used
    for a, b in zip(plain.state_dict().values(), buffered.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert fedbuff.staleness_counts == {0: 3 * N}
    assert all(m["fl/sim_seconds"] > 0 for m in fedbuff.history)


class Versions(FederatedAlgorithm):
    """Records the global model after every server update and the weights every client starts from."""

    order = 100

    def __init__(self) -> None:
        super().__init__()
        self.globals: list[torch.Tensor] = []
        self.starts: list[tuple[int, int, torch.Tensor]] = []

    def on_federated_fit_start(self, context):
        super().on_federated_fit_start(context)
        self.globals.append(context.state.flat.clone())

    def on_client_start(self, client: ClientContext) -> None:
        module = self.context.state.module_float
        self.starts.append((client.round_idx, client.client_id, torch.cat([t.detach().reshape(-1) for t in module])))

    def on_round_end(self, trainer, round_context):
        self.globals.append(self.context.state.flat.clone())
        return {}


def test_stale_clients_start_from_their_version_and_are_down_weighted():
    gen = torch.Generator().manual_seed(0)
    data = InMemoryDataset(torch.randn(90, 2, generator=gen), torch.zeros(90, dtype=torch.long))
    dm = make_dm(data=data, partitioner=QuantitySkewPartitioner(num_clients=N, sigma=0.5, seed=0))
    fedbuff, versions = FedBuff(buffer_size=2, concurrency=4, staleness="polynomial", staleness_exponent=1.0,
                                profiles="phones", flops_per_sample=1e5), Versions()
    applied: list[list[tuple[int, int]]] = []

    class Record(FederatedAlgorithm):
        def on_round_end(self, trainer, round_context):
            applied.append(list(fedbuff.last_updates))
            return {}

    model = LinearLoss(lr=0.1)
    fit([FederatedAveraging(), fedbuff, versions, Record()], dm, rounds=8, model=model)
    assert max(fedbuff.staleness_counts) >= 1
    x = data.tensors[0].double()
    sizes = dm.client_sizes.astype(np.float64)
    w = torch.zeros(2, dtype=torch.float64)
    starts = {(r, c): start for r, c, start in versions.starts}
    for round_idx, updates in enumerate(applied):
        total = sum(sizes[c] for c, _ in updates)
        step = torch.zeros(2, dtype=torch.float64)
        for client, staleness in updates:
            # it started from the global model of the version it downloaded
            assert torch.equal(starts[(round_idx, client)], versions.globals[round_idx - staleness])
            update = -0.1 * 2 * x[dm.client_indices[client]].sum(0)  # LinearLoss: 2 local epochs of sum(x)
            step += sizes[client] / total * update / (1 + staleness)
        w += step
        np.testing.assert_allclose(versions.globals[round_idx + 1].double().numpy(), w.numpy(), rtol=1e-5, atol=1e-6)
    assert model.w.detach().double().numpy() == pytest.approx(w.numpy(), rel=1e-5)


def run_resumable(tmp_path, rounds, ckpt_path=None):
    fedbuff = FedBuff(buffer_size=2, concurrency=4, profiles="phones")
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                           auto_insert_metric_name=False)
    torch.manual_seed(0)
    model = TinyClassifier()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[FederatedAveraging(), fedbuff, ckpt],
                                                enable_checkpointing=True))
    trainer.fit(model, datamodule=make_dm(), ckpt_path=ckpt_path)
    return model, fedbuff


def test_resume_with_stale_versions_in_flight_is_exact(tmp_path):
    full, full_buff = run_resumable(tmp_path / "full", 6)
    run_resumable(tmp_path / "part", 3)
    resumed, resumed_buff = run_resumable(tmp_path / "resumed", 6, ckpt_path=str(tmp_path / "part" / "round2.ckpt"))
    assert max(full_buff.staleness_counts) >= 1
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed_buff.history == full_buff.history[3:]
    assert resumed_buff.staleness_counts == full_buff.staleness_counts


def test_bad_arguments_are_refused():
    with pytest.raises(FederatedConfigError, match="buffer_size must be an integer >= 1, got 0"):
        FedBuff(buffer_size=0)
    with pytest.raises(FederatedConfigError, match=r"staleness must be one of \['constant', 'sqrt', 'polynomial'\]"):
        FedBuff(staleness="hinge")
    with pytest.raises(FederatedConfigError, match=r"buffer_size must be in \[1, num_clients=6\], got 7"):
        fit([FederatedAveraging(), FedBuff(buffer_size=7)], make_dm(), rounds=1)
