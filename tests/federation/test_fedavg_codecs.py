"""Codecs in the round: what the clients start from, what the server aggregates, and the bytes reported."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, quiet_trainer_kwargs

from lightning_fl import ClassifierModule, FederatedAveraging, FederatedConfigError, FederatedDataModule
from lightning_fl.codecs import (
    Chain,
    ErrorFeedback,
    Float16,
    Identity,
    Kashin,
    StochasticQuantizer,
    Subsample,
    TensorPolicy,
    TopK,
)
from lightning_fl.datamodules import DirichletPartitioner, IIDPartitioner
from lightning_fl.federation.link import Link
from lightning_fl.nn import MLP


def digits_run(uplink=None, downlink=None, rounds=25):
    torch.manual_seed(0)
    model = ClassifierModule(backbone=MLP(64, [128], 10), lr=0.05)
    dm = FederatedDataModule(partitioner=DirichletPartitioner(num_clients=30, alpha=0.5, seed=0),
                             clients_per_round=6, batch_size=16)
    fedavg = FederatedAveraging(uplink=uplink, downlink=downlink)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[fedavg]))
    trainer.fit(model, datamodule=dm)
    return model, fedavg, float(trainer.callback_metrics["val/acc"])


def expected_bytes(model: torch.nn.Module, codec) -> tuple[int, int]:
    """(dense float32 bytes, payload bytes) of one client's update, encoded here independently of the round."""
    raw, dense, sent, policy = Identity(), 0, 0, TensorPolicy()
    tensors = [(n, p.detach()) for n, p in model.named_parameters()] + list(model.named_buffers())
    for name, t in tensors:
        dense += raw.encode(t.float() if t.is_floating_point() else t, 0).nbytes
        use = codec if t.is_floating_point() and policy.select(name, t) else raw
        sent += use.encode(torch.zeros_like(t) if t.is_floating_point() else t, 1).nbytes
    return dense, sent


@pytest.mark.slow
def test_two_bit_kashin_uplink_still_learns_and_reports_measured_ratio():
    codec = Chain(Kashin(), StochasticQuantizer(bits=2))
    model, fedavg, acc = digits_run(uplink=codec)
    assert acc > 0.6  # chance is 0.1; uncompressed reaches about 0.8 in these 25 rounds
    dense, sent = expected_bytes(model, codec)
    for h in fedavg.history:
        assert h["fl/uplink_bytes"] == 6 * sent
        assert h["fl/uplink_ratio"] == pytest.approx(dense / sent)
        assert h["fl/downlink_ratio"] == pytest.approx(1.0)
    assert h["fl/uplink_ratio"] > 5


class RecordStart(pl.Callback):
    """The module's weights right after the server callback loaded a client's model (runs after it)."""

    def __init__(self) -> None:
        self.starts: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.datamodule.current_plan.first[batch_idx]:
            self.starts.append(pl_module.net[0].weight.detach().clone())


def test_clients_train_from_the_decoded_downlink_model(tiny_data):
    torch.manual_seed(0)
    model = TinyClassifier(in_features=6)
    global_w = model.net[0].weight.detach().clone()
    dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=4), clients_per_round=2)
    record = RecordStart()
    policy = TensorPolicy(min_numel=1)
    fedavg = FederatedAveraging(downlink=Float16(), policy=policy)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=[fedavg, record]))
    trainer.fit(model, datamodule=dm)
    expected = global_w.half().float()
    assert not torch.equal(expected, global_w)
    for start in record.starts:
        assert torch.equal(start, expected)


def test_payload_seeds_differ_per_client_and_round():
    link = Link(Subsample(0.5), "uplink")
    x = [torch.randn(4096)]
    a = link.codec.encode(x[0], 1)
    payloads = {}
    for client, round_idx in [(1, 0), (2, 0), (1, 1)]:
        _, received = link.send(["w"], x, seed=0, round_idx=round_idx, client_id=client)
        payloads[(client, round_idx)] = received[0]
    assert not torch.equal(payloads[(1, 0)], payloads[(2, 0)])
    assert not torch.equal(payloads[(1, 0)], payloads[(1, 1)])
    assert a.nbytes < 4096 * 4


def test_error_feedback_residuals_are_checkpointed_and_resume_exactly(tiny_data, tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    def run(max_epochs, ckpt_path=None, init=None):
        model = TinyClassifier(in_features=6)
        if init is not None:
            model.load_state_dict(init)
        dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=4), clients_per_round=3,
                                 batch_size=10)
        fedavg = FederatedAveraging(uplink=ErrorFeedback(TopK(0.2)), policy=TensorPolicy(min_numel=1))
        ckpt = ModelCheckpoint(dirpath=tmp_path / str(ckpt_path is None) / str(max_epochs), every_n_epochs=1,
                               save_top_k=-1)
        trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=max_epochs, callbacks=[fedavg, ckpt],
                                                    enable_checkpointing=True))
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return model, fedavg, ckpt

    torch.manual_seed(0)
    init = TinyClassifier(in_features=6).state_dict()
    full, full_cb, _ = run(4, init=init)
    _, part_cb, _ = run(2, init=init)
    assert part_cb.uplink.codec.residuals  # residuals exist and were saved with the callback's state
    last_round = sorted((tmp_path / "True" / "2").glob("epoch=1*.ckpt"))[-1]
    resumed, resumed_cb, _ = run(4, ckpt_path=str(last_round))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed_cb.uplink.codec.residuals.keys() == full_cb.uplink.codec.residuals.keys()


@pytest.mark.slow
@pytest.mark.distributed
def test_error_feedback_on_two_processes_matches_one_and_checkpoints_every_residual(tiny_data, tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_fl import FederatedDDPStrategy

    def run(devices):
        torch.manual_seed(0)
        model = TinyClassifier(in_features=6)
        dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=6), clients_per_round=4,
                                 batch_size=10)
        fedavg = FederatedAveraging(uplink=ErrorFeedback(TopK(0.3)), policy=TensorPolicy(min_numel=1))
        ckpt = ModelCheckpoint(dirpath=tmp_path / str(devices), every_n_epochs=1, save_last=True)
        extra = {"strategy": FederatedDDPStrategy(start_method="spawn")} if devices > 1 else {}
        trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=3, devices=devices, callbacks=[fedavg, ckpt],
                                                    enable_checkpointing=True, **extra))
        trainer.fit(model, datamodule=dm)
        saved = torch.load(tmp_path / str(devices) / "last.ckpt", weights_only=False)
        state = next(v for v in saved["callbacks"].values() if "uplink" in v)
        return model, state["uplink"]["residuals"]

    one, one_residuals = run(1)
    two, two_residuals = run(2)
    assert one_residuals.keys() == two_residuals.keys() and len(one_residuals) > 0
    for key in one_residuals:
        torch.testing.assert_close(one_residuals[key], two_residuals[key], rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_pinned_plan_puts_each_client_on_its_rank():
    from lightning_fl.datamodules.plan import build_round_plan

    idx = [np.arange(i * 10, i * 10 + 10) for i in range(6)]
    for rank in range(2):
        plan = build_round_plan(0, idx, clients_per_round=4, batch_size=3, local_epochs=1,
                                client_sampling="uniform", shuffle=True, seed=0, world_size=2, rank=rank,
                                pin_clients=True)
        assert all(c % 2 == rank for c in plan.rank_clients)


def test_bad_policy_is_refused():
    with pytest.raises(FederatedConfigError, match="policy must be a lightning_fl TensorPolicy, got int"):
        FederatedAveraging(policy=1024)


def test_error_feedback_warns_around_a_rescaling_unbiased_codec():
    with pytest.warns(UserWarning, match="error feedback is meant for biased"):
        ErrorFeedback(Chain(Subsample(0.25), StochasticQuantizer(bits=2)))


def test_fixed_size_lossless_payloads_are_measured_once_and_counted_every_time():
    link = Link(None, "uplink")
    tensors = [torch.randn(3, 4), torch.randn(7)]
    expected = sum(Identity().encode(t, 0).nbytes for t in tensors)
    for client in range(3):
        nbytes, received = link.send(["a", "b"], tensors, seed=0, round_idx=0, client_id=client)
        assert nbytes == expected
        assert all(r is t for r, t in zip(received, tensors, strict=True))
