"""FedMRN in the round: what the optimizer sees, what travels, and what the server rebuilds."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, quiet_trainer_kwargs

from lightning_fl import FederatedAveraging, FederatedConfigError, FederatedDataModule
from lightning_fl.algorithms.fedmrn.callback import MaskedRandomNoise
from lightning_fl.codecs import Identity
from lightning_fl.datamodules import IIDPartitioner
from lightning_fl.federation.algorithm import FederatedAlgorithm

MASKED = ["net.0.parametrizations.weight.original", "net.2.parametrizations.weight.original"]


class RecordMaskedUpdates(FederatedAlgorithm):
    """Runs after FedMRN: keeps each client's dense client-side update n * m of the masked weights."""

    order = 100

    def __init__(self) -> None:
        super().__init__()
        self.updates: dict[int, list[torch.Tensor]] = {}

    def on_client_update(self, client, update, views):
        names = [s.name for s in self.context.state.float_specs]
        self.updates[client.client_id] = [views[names.index(n)].clone() for n in MASKED]


def fit(tiny_data, algorithms, rounds=1, **trainer_kwargs):
    torch.manual_seed(0)
    model = TinyClassifier(momentum=0.0)
    dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=6), clients_per_round=3,
                             batch_size=10, local_epochs=2)
    fedavg = FederatedAveraging()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[fedavg, *algorithms],
                                                **trainer_kwargs))
    trainer.fit(model, datamodule=dm)
    return model, fedavg, dm


@pytest.mark.parametrize("mask", ["binary", "signed"])
def test_server_rebuilds_fedavg_of_the_clients_dense_masked_updates(tiny_data, mask):
    torch.manual_seed(0)
    init = TinyClassifier(momentum=0.0)
    w0 = [init.net[i].weight.detach().clone() for i in (0, 2)]
    record = RecordMaskedUpdates()
    model, _, dm = fit(tiny_data, [MaskedRandomNoise(mask=mask), record])
    sizes = dm.client_sizes
    clients = sorted(record.updates)
    assert len(clients) == 3
    for i, layer in enumerate((0, 2)):
        acc = torch.zeros_like(w0[i])
        for c in clients:
            acc.add_(record.updates[c][i], alpha=float(sizes[c]))
        expected = w0[i] + acc / float(sizes[clients].sum())
        got = model.net[layer].weight  # the parametrization is removed at the end of fit
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)
        for c in clients:  # every client's update is n * m: entries are 0 or +-|n| <= sigma
            assert record.updates[c][i].abs().max() <= (0.01 if mask == "binary" else 0.005) + 1e-9


class CheckOptimizer(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        opt_params = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
        self.ok = all(
            not pl_module.net[i].parametrizations.weight.original.requires_grad
            and id(pl_module.net[i].parametrizations.weight[0].u) in opt_params
            for i in (0, 2)
        )


def test_optimizer_sees_latents_not_frozen_weights_and_the_model_comes_back_plain(tiny_data):
    check = CheckOptimizer()
    model, _, _ = fit(tiny_data, [MaskedRandomNoise(), check])
    assert check.ok
    assert sorted(model.state_dict()) == ["net.0.bias", "net.0.weight", "net.2.bias", "net.2.weight"]
    assert all(p.requires_grad for p in model.parameters())


def test_uplink_bytes_are_packed_masks_plus_seeds_plus_raw_other_tensors(tiny_data):
    model, fedavg, _ = fit(tiny_data, [MaskedRandomNoise()])
    raw = Identity()
    per_client = 0
    for name, p in model.named_parameters():  # the plain model after fit: net.i.weight were the masked ones
        if name.replace("weight", "parametrizations.weight.original") in MASKED:
            per_client += math.ceil(p.numel() / 8) + (2 + 4 * p.dim()) + 8
        else:
            per_client += raw.encode(p.detach(), 0).nbytes
    assert fedavg.history[0]["fl/uplink_bytes"] == 3 * per_client
    assert fedavg.history[0]["fl/uplink_ratio"] > 4  # biases (19 of 163 elements) travel as float32


def test_resume_is_bit_identical(tiny_data, tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    def run(rounds, ckpt_path=None):
        torch.manual_seed(0)
        model = TinyClassifier(momentum=0.0)
        dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=6), clients_per_round=3,
                                 batch_size=10)
        ckpt = ModelCheckpoint(dirpath=tmp_path / str(rounds), every_n_epochs=1, save_last=True)
        trainer = pl.Trainer(**quiet_trainer_kwargs(
            max_epochs=rounds, enable_checkpointing=True,
            callbacks=[FederatedAveraging(), MaskedRandomNoise(mask="signed"), ckpt]))
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return model

    full = run(3)
    run(2)
    resumed = run(3, ckpt_path=str(tmp_path / "2" / "last.ckpt"))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_bf16_mixed_runs_and_learns(tiny_data):
    _, fedavg, _ = fit(tiny_data, [MaskedRandomNoise()], rounds=4, precision="bf16-mixed")
    assert len(fedavg.history) == 4


def test_bad_arguments():
    with pytest.raises(FederatedConfigError, match="mask must be one of"):
        MaskedRandomNoise(mask="ternary")
    with pytest.raises(FederatedConfigError, match="sigma must be a finite number > 0"):
        MaskedRandomNoise(sigma=-1.0)


def test_unknown_module_name_is_refused(tiny_data):
    with pytest.raises(FederatedConfigError, match=r"modules must name modules of the model, got unknown \['fc9'\]"):
        fit(tiny_data, [MaskedRandomNoise(modules=["fc9"])])


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_match_one(tiny_data):
    from lightning_fl import FederatedDDPStrategy

    one, _, _ = fit(tiny_data, [MaskedRandomNoise(mask="signed")], rounds=2)
    two, _, _ = fit(tiny_data, [MaskedRandomNoise(mask="signed")], rounds=2, devices=2,
                    strategy=FederatedDDPStrategy(start_method="spawn"))
    a, b = one.state_dict(), two.state_dict()
    assert sorted(a) == sorted(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7, msg=name)
