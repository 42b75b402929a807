"""Parameters frozen at fit start and unfrozen later (Lightning's ``BackboneFinetuning``) are federated."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import quiet_trainer_kwargs
from pytorch_lightning.callbacks import BackboneFinetuning
from test_fedavg_reference import make_dm
from torch import nn

from lightning_fl import DifferentialPrivacy, FederatedAveraging, PersonalLayers
from lightning_fl.codecs import StochasticQuantizer
from lightning_fl.codecs.policy import TensorPolicy

ROUNDS = 3


class BackboneClassifier(pl.LightningModule):
    """A module written for ``BackboneFinetuning``: a ``backbone`` attribute, an optimizer over trainable params."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.head(self.backbone(x)), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


class ClientRecorder(pl.Callback):
    """Records every client's weights when it starts training and after its last step, and the global model at
    each round's end. Placed before FederatedAveraging, so its batch-end hook sees the client's own weights."""

    def __init__(self) -> None:
        self.starts: list[list[dict[str, torch.Tensor]]] = [[] for _ in range(ROUNDS)]
        self.ends: list[list[tuple[int, dict[str, torch.Tensor]]]] = [[] for _ in range(ROUNDS)]
        self.globals: list[dict[str, torch.Tensor]] = []

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        plan = trainer.datamodule.current_plan
        if plan.first[trainer.fit_loop.epoch_loop.batch_idx]:
            self.starts[trainer.current_epoch].append(_weights(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        plan = trainer.datamodule.current_plan
        if plan.last[batch_idx]:
            self.ends[trainer.current_epoch].append((int(plan.batch_client[batch_idx]), _weights(pl_module)))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.globals.append(_weights(pl_module))


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _fit(tiny_data, fedavg: FederatedAveraging, recorder: pl.Callback | None = None) -> BackboneClassifier:
    torch.manual_seed(0)
    model = BackboneClassifier()
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=1.0)
    callbacks = [finetuning] + ([recorder] if recorder is not None else []) + [fedavg]
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=ROUNDS, callbacks=callbacks))
    trainer.fit(model, datamodule=make_dm(tiny_data))
    return model


def test_unfrozen_backbone_starts_every_client_from_the_global_model_and_is_averaged(tiny_data):
    recorder = ClientRecorder()
    fedavg = FederatedAveraging()
    _fit(tiny_data, fedavg, recorder)
    sizes = fedavg._dm.client_sizes
    initial = recorder.starts[0][0]
    for round_idx in range(ROUNDS):
        previous = initial if round_idx == 0 else recorder.globals[round_idx - 1]
        for start in recorder.starts[round_idx]:  # every client starts from the global model
            for name, tensor in start.items():
                torch.testing.assert_close(tensor, previous[name], rtol=0, atol=0, msg=name)
        weight = sum(float(sizes[c]) for c, _ in recorder.ends[round_idx])
        for name, tensor in recorder.globals[round_idx].items():  # the global model is the clients' weighted mean
            mean = sum(float(sizes[c]) * end[name] for c, end in recorder.ends[round_idx]) / weight
            torch.testing.assert_close(tensor, mean, rtol=1e-5, atol=1e-6, msg=f"round {round_idx} {name}")
    for name in ("backbone.0.weight", "backbone.0.bias"):
        assert torch.equal(recorder.globals[0][name], initial[name])  # frozen in round 0
        assert not torch.equal(recorder.globals[1][name], initial[name])  # trained and averaged from round 1


def test_frozen_tensors_do_not_travel_on_the_uplink_while_unchanged(tiny_data):
    fedavg = FederatedAveraging()
    _fit(tiny_data, fedavg)
    backbone_bytes = (6 * 16 + 16) * 4  # float32 weight and bias
    header_slack = 64
    up = [m["fl/uplink_bytes"] / m["fl/clients"] for m in fedavg.history]
    assert backbone_bytes <= up[1] - up[0] <= backbone_bytes + header_slack
    assert up[1] == up[2]
    down = [m["fl/downlink_bytes"] / m["fl/clients"] for m in fedavg.history]
    assert down[0] == down[1] == down[2]  # clients need the backbone to run the model, frozen or not


def test_frozen_tensors_are_left_out_of_a_lossy_uplink_too(tiny_data):
    fedavg = FederatedAveraging(uplink=StochasticQuantizer(bits=4), policy=TensorPolicy(min_numel=1))
    model = _fit(tiny_data, fedavg)
    up = [m["fl/uplink_bytes"] / m["fl/clients"] for m in fedavg.history]
    assert up[0] < up[1] == up[2]
    assert all(torch.isfinite(p).all() for p in model.parameters())


class FrozenFirstLayer(pl.LightningModule):
    """A pretrained first layer the user keeps frozen for the whole fit."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(6, 16).requires_grad_(False)
        self.head = nn.Linear(16, 3)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.head(torch.relu(self.backbone(x))), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.head.parameters(), lr=0.1)


def test_differential_privacy_adds_no_noise_to_frozen_parameters(tiny_data):
    torch.manual_seed(0)
    model = FrozenFirstLayer()
    frozen = model.backbone.weight.detach().clone()
    head = model.head.weight.detach().clone()
    callbacks = [FederatedAveraging(), DifferentialPrivacy(clip_norm=1.0, noise_multiplier=1.0)]
    pl.Trainer(**quiet_trainer_kwargs(max_epochs=2, callbacks=callbacks)).fit(model, datamodule=make_dm(tiny_data))
    assert torch.equal(model.backbone.weight, frozen)
    assert not torch.equal(model.head.weight, head)


def test_a_frozen_shared_backbone_under_a_personal_head_sends_only_presence_bits(tiny_data):
    torch.manual_seed(0)
    model = FrozenFirstLayer()
    frozen = model.backbone.weight.detach().clone()
    fedavg = FederatedAveraging(uplink=StochasticQuantizer(bits=4), policy=TensorPolicy(min_numel=1))
    callbacks = [fedavg, PersonalLayers(modules=["head"])]
    pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=callbacks)).fit(model, datamodule=make_dm(tiny_data))
    assert fedavg.history[0]["fl/uplink_bytes"] == fedavg.history[0]["fl/clients"] * 1  # 2 shared tensors: 1 byte
    assert torch.equal(model.backbone.weight, frozen)
