"""Federated Dropout in the Trainer against a hand-written plain-torch version, with codecs, resume and errors."""

from __future__ import annotations

import copy
import logging

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import TinyClassifier, quiet_trainer_kwargs
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from lightning_fl import (
    FedBuff,
    FederatedAveraging,
    FederatedConfigError,
    FederatedDataModule,
    FederatedDDPStrategy,
    FederatedDropout,
    FedProx,
    Scaffold,
    SystemsSimulation,
)
from lightning_fl.codecs import (
    Chain,
    ErrorFeedback,
    Float16,
    Identity,
    RandomHadamard,
    StochasticQuantizer,
    TensorPolicy,
    TopK,
)
from lightning_fl.datamodules import DirichletPartitioner, IIDPartitioner
from lightning_fl.datamodules.plan import client_batches, sample_clients
from lightning_fl.nn import SubmodelPlan, find_dropout_groups
from lightning_fl.seeding import derive_seed, generator
from lightning_fl.server.robust import TrimmedMeanAggregator

ROUNDS, CLIENTS, PER_ROUND, BATCH, EPOCHS, SEED, KEEP = 3, 6, 3, 8, 2, 7, 0.5


def make_dm(tiny_data, **overrides) -> FederatedDataModule:
    kwargs = dict(partitioner=DirichletPartitioner(num_clients=CLIENTS, alpha=1.0, seed=0),
                  clients_per_round=PER_ROUND, batch_size=BATCH, local_epochs=EPOCHS, seed=SEED)
    kwargs.update(overrides)
    return FederatedDataModule(*tiny_data, **kwargs)


def plain_torch_federated_dropout(
    net: nn.Sequential, dm: FederatedDataModule, per: str, aggregation: str, downlink_fp16: bool = False
):
    """Federated Dropout by hand for Linear(6, 16) -> ReLU -> Linear(16, 3): cut, train the small model, put back."""
    x, y = dm.train_dataset.tensors
    sizes = dm.client_sizes
    plan = SubmodelPlan(net, find_dropout_groups(net), KEEP)
    g = {k: v.clone() for k, v in net.state_dict().items()}
    for round_idx in range(ROUNDS):
        clients = sample_clients(round_idx, sizes, PER_ROUND, "uniform", SEED)
        acc = {k: torch.zeros_like(v) for k, v in g.items()}
        held = {k: torch.zeros_like(v) for k, v in g.items()}
        weight_sum = 0.0
        for c in clients:
            key = (round_idx, int(c)) if per == "client" else (round_idx, -1)
            (units,) = plan.choose(generator(SEED, "federated_dropout", *key))
            small = nn.Sequential(nn.Linear(6, len(units)), nn.ReLU(), nn.Linear(len(units), 3))
            start = {"0.weight": g["0.weight"][units], "0.bias": g["0.bias"][units],
                     "2.weight": g["2.weight"][:, units], "2.bias": g["2.bias"]}
            if downlink_fp16:  # the client starts from the model as the fp16 downlink delivers it
                start = {k: v.half().float() for k, v in start.items()}
            small.load_state_dict(start)
            opt = torch.optim.SGD(small.parameters(), lr=0.1, momentum=0.9)
            torch.manual_seed(derive_seed(SEED, "client", round_idx, int(c)))
            for b in client_batches(dm.client_indices[c], BATCH, EPOCHS, True, SEED, round_idx, int(c)):
                opt.zero_grad()
                F.cross_entropy(small(x[b]), y[b]).backward()
                opt.step()
            w = float(sizes[c])
            update = {k: v - start[k] for k, v in small.state_dict().items()}
            for k, rows, cols in (("0.weight", units, slice(None)), ("0.bias", units, None),
                                  ("2.weight", slice(None), units), ("2.bias", slice(None), None)):
                index = (rows,) if cols is None else (rows, cols)
                acc[k][index] += w * update[k]
                held[k][index] += w
            weight_sum += w
        scale = weight_sum / float(sizes.sum()) if aggregation == "all" else 1.0
        g = {k: g[k] + torch.where(held[k] > 0, acc[k] / held[k].clamp_min(1e-30), 0.0) * scale for k in g}
    return g


@pytest.mark.parametrize(("per", "aggregation"), [("client", "selected"), ("round", "selected"), ("client", "all")])
def test_trainer_equals_plain_torch_federated_dropout(tiny_data, per, aggregation):
    torch.manual_seed(0)
    model = TinyClassifier()
    reference = copy.deepcopy(model.net)
    dm = make_dm(tiny_data)
    callbacks = [FederatedAveraging(aggregation), FederatedDropout(keep=KEEP, per=per)]
    pl.Trainer(**quiet_trainer_kwargs(max_epochs=ROUNDS, callbacks=callbacks)).fit(model, datamodule=dm)
    expected = plain_torch_federated_dropout(reference, dm, per, aggregation)
    for name, tensor in model.net.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    assert model.net[0].weight.shape == (16, 6)  # the fit ends with the full model


def test_units_no_client_held_keep_their_values(tiny_data):
    torch.manual_seed(0)
    model = TinyClassifier()
    before = copy.deepcopy(model.net.state_dict())
    dm = make_dm(tiny_data, clients_per_round=1)
    callbacks = [FederatedAveraging(), FederatedDropout(keep=0.25)]
    pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=callbacks)).fit(model, datamodule=dm)
    (client,) = sample_clients(0, dm.client_sizes, 1, "uniform", SEED)
    plan = SubmodelPlan(model.net, find_dropout_groups(model.net), 0.25)
    (units,) = plan.choose(generator(SEED, "federated_dropout", 0, int(client)))
    dropped = torch.ones(16, dtype=torch.bool)
    dropped[units] = False
    after = model.net.state_dict()
    assert torch.equal(after["0.weight"][dropped], before["0.weight"][dropped])
    assert torch.equal(after["0.bias"][dropped], before["0.bias"][dropped])
    assert torch.equal(after["2.weight"][:, dropped], before["2.weight"][:, dropped])
    assert not torch.equal(after["0.weight"][units], before["0.weight"][units])
    assert not torch.equal(after["2.bias"], before["2.bias"])  # the output layer's bias is always held


def test_bytes_are_the_submodel_tensors_through_the_codecs(tiny_data, caplog):
    caplog.set_level(logging.INFO)
    dm = make_dm(tiny_data)
    down = Chain(RandomHadamard(), StochasticQuantizer(bits=4))
    up = Chain(RandomHadamard(), StochasticQuantizer(bits=2))
    fedavg = FederatedAveraging(downlink=down, uplink=up, policy=TensorPolicy(min_numel=1))
    model = TinyClassifier()
    callbacks = [fedavg, FederatedDropout(keep=KEEP)]
    pl.Trainer(**quiet_trainer_kwargs(max_epochs=2, callbacks=callbacks)).fit(model, datamodule=dm)
    assert "(8, 6)" in caplog.text and "(16, 6)" not in caplog.text  # the policy reports the submodel's shapes
    small = [torch.zeros(8, 6), torch.zeros(8), torch.zeros(3, 8), torch.zeros(3)]
    per_client_down = sum(down.encode(t, 1).nbytes for t in small) + 8  # + the seed of the kept units
    per_client_up = sum(up.encode(t, 1).nbytes for t in small)
    full_raw = sum(Identity().encode(p.detach(), 0).nbytes for p in model.parameters())
    for h in fedavg.history:
        assert h["fl/downlink_bytes"] == PER_ROUND * per_client_down
        assert h["fl/uplink_bytes"] == PER_ROUND * per_client_up
        assert h["fl/uplink_ratio"] == pytest.approx(full_raw / per_client_up)
    assert torch.isfinite(model.net[0].weight).all()


def run_resumable(tiny_data, tmp_path, max_epochs, ckpt_path=None, init_state=None):
    model = TinyClassifier(batchnorm=True)
    if init_state is not None:
        model.load_state_dict(init_state)
    dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=8, seed=0), clients_per_round=3,
                             batch_size=5, seed=5)
    fedavg = FederatedAveraging(downlink=Chain(RandomHadamard(), StochasticQuantizer(bits=8)))
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                           auto_insert_metric_name=False)
    callbacks = [fedavg, FederatedDropout(keep=0.75), ckpt]
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=max_epochs, callbacks=callbacks, enable_checkpointing=True))
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, fedavg


def test_resume_is_bit_identical_with_batchnorm_and_a_lossy_downlink(tiny_data, tmp_path):
    torch.manual_seed(0)
    init = TinyClassifier(batchnorm=True).state_dict()
    full, full_cb = run_resumable(tiny_data, tmp_path / "full", 4, init_state=init)
    run_resumable(tiny_data, tmp_path / "part", 2, init_state=init)
    last = str(tmp_path / "part" / "round1.ckpt")
    resumed, resumed_cb = run_resumable(tiny_data, tmp_path / "resumed", 4, ckpt_path=last)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed_cb.downlink_bytes_total == full_cb.downlink_bytes_total


def test_fedprox_and_bf16_mixed_train_submodels(tiny_data):
    results = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(0)
        model = TinyClassifier()
        callbacks = [FederatedAveraging(), FederatedDropout(keep=0.5), FedProx(mu=0.1)]
        trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=2, callbacks=callbacks, precision=precision))
        trainer.fit(model, datamodule=make_dm(tiny_data))
        results[precision] = model.net[0].weight.detach().clone()
    assert results["bf16-mixed"].shape == (16, 6)
    torch.testing.assert_close(results["bf16-mixed"], results["32-true"], atol=0.05, rtol=0.05)


@pytest.mark.parametrize(
    ("callbacks", "expected"),
    [
        ([FederatedAveraging(), FederatedDropout(), Scaffold()], "cannot be combined with Scaffold"),
        ([FederatedAveraging(uplink=ErrorFeedback(TopK(0.1))), FederatedDropout()], "stateful uplink codec"),
        ([FederatedAveraging(aggregator=TrimmedMeanAggregator(0.1)), FederatedDropout()],
         "TrimmedMeanAggregator cannot combine"),
    ],
)
def test_incompatible_combinations_are_refused(tiny_data, callbacks, expected):
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=callbacks))
    with pytest.raises(FederatedConfigError, match=expected):
        trainer.fit(TinyClassifier(), datamodule=make_dm(tiny_data))


def test_arguments_are_checked():
    with pytest.raises(FederatedConfigError, match=r"keep must be in \(0, 1\], got 1.5"):
        FederatedDropout(keep=1.5)
    with pytest.raises(FederatedConfigError, match=r"per must be one of \['client', 'round'\], got 'batch'"):
        FederatedDropout(per="batch")  # type: ignore[arg-type]
    with pytest.raises(FederatedConfigError, match="dict with 'size' and 'members'"):
        FederatedDropout(groups=[{"units": 4}])


class Untraceable(TinyClassifier):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net[0](x)
        return self.net[2](torch.relu(h) if h.mean() > -100 else h)


def test_untraceable_model_gets_a_clear_error_and_groups_can_be_declared_by_hand(tiny_data):
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=[FederatedAveraging(), FederatedDropout()]))
    with pytest.raises(FederatedConfigError, match=r"could not trace Untraceable.forward.*groups="):
        trainer.fit(Untraceable(), datamodule=make_dm(tiny_data))
    groups = [{"size": 16, "members": ["net.0.weight:0", "net.0.bias:0", "net.2.weight:1"], "name": "hidden"}]
    model = Untraceable()
    callbacks = [FederatedAveraging(), FederatedDropout(keep=0.5, groups=groups)]
    pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=callbacks)).fit(model, datamodule=make_dm(tiny_data))
    assert callbacks[0].history[0]["fl/submodel_fraction"] < 0.6


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_equal_plain_torch_federated_dropout(tiny_data):
    torch.manual_seed(0)
    model = TinyClassifier()
    reference = copy.deepcopy(model.net)
    strategy = FederatedDDPStrategy(start_method="spawn")
    fedavg = FederatedAveraging(downlink=Float16(), policy=TensorPolicy(min_numel=1))
    callbacks = [fedavg, FederatedDropout(keep=KEEP)]
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=ROUNDS, devices=2, strategy=strategy, callbacks=callbacks))
    trainer.fit(model, datamodule=make_dm(tiny_data))
    dm = make_dm(tiny_data)
    dm.setup("fit")
    expected = plain_torch_federated_dropout(reference, dm, "client", "selected", downlink_fp16=True)
    for name, tensor in model.net.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-5, msg=name)


def test_simulated_devices_count_the_submodels_flops_and_bytes(tiny_data):
    runs = {}
    for keep in (1.0, 0.5):
        torch.manual_seed(0)
        systems = SystemsSimulation(profiles="phones", failures=False)
        fedavg = FederatedAveraging()
        callbacks = [systems, fedavg] + ([FederatedDropout(keep=keep)] if keep < 1 else [])
        pl.Trainer(**quiet_trainer_kwargs(max_epochs=2, callbacks=callbacks)).fit(TinyClassifier(),
                                                                               datamodule=make_dm(tiny_data))
        runs[keep] = systems, fedavg
    (full, full_avg), (small, small_avg) = runs[1.0], runs[0.5]
    # Linear(6, 16) and Linear(16, 3) both touch the input or the output: FLOPs and bytes about halve
    assert small.flops_per_sample / full.flops_per_sample == pytest.approx(0.5, abs=0.06)
    assert small_avg.history[0]["fl/energy_joules"] < full_avg.history[0]["fl/energy_joules"]
    assert small.payload_estimate[0] < 0.6 * full.payload_estimate[0]


def test_frozen_parameters_in_a_group_are_cut_with_the_rest(tiny_data):
    torch.manual_seed(0)
    model = TinyClassifier()
    model.net[0].bias.requires_grad_(False)  # not federated state, but its rows must shrink with the layer
    frozen = model.net[0].bias.detach().clone()
    callbacks = [FederatedAveraging(), FederatedDropout(keep=0.5)]
    pl.Trainer(**quiet_trainer_kwargs(max_epochs=2, callbacks=callbacks)).fit(model, datamodule=make_dm(tiny_data))
    assert model.net[0].bias.shape == (16,) and torch.equal(model.net[0].bias, frozen)
    assert callbacks[0].history[-1]["fl/submodel_fraction"] < 0.6


def test_fedbuff_cuts_submodels_from_the_stale_versions_clients_downloaded(tiny_data):
    torch.manual_seed(0)
    model = TinyClassifier()
    fedavg = FederatedAveraging()
    callbacks = [fedavg, FedBuff(buffer_size=2, concurrency=4, profiles="phones"), FederatedDropout(keep=0.5)]
    dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=6, seed=0), clients_per_round=3,
                             batch_size=5, seed=3)
    pl.Trainer(**quiet_trainer_kwargs(max_epochs=4, callbacks=callbacks)).fit(model, datamodule=dm)
    assert max(h["fl/staleness_max"] for h in fedavg.history) >= 1  # some clients trained from older versions
    assert model.net[0].weight.shape == (16, 6) and torch.isfinite(model.net[0].weight).all()
    assert all(h["fl/submodel_fraction"] < 0.6 for h in fedavg.history)
