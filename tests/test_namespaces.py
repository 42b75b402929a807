"""Both Lightning namespaces: lightning_fl's callbacks and data module on a ``lightning.pytorch.Trainer``."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import quiet_trainer_kwargs

from lightning_fl import FederatedAveraging, FederatedConfigError, FederatedDataModule, RoundProgressBar
from lightning_fl.datamodules import DirichletPartitioner
from lightning_fl.federation.trainer_checks import _check_strategy
from lightning_fl.strategies.unified import FederatedDDPStrategy as UnifiedFederatedDDPStrategy


def _module(base: type) -> Any:
    """The same tiny classifier written against either namespace."""

    class Tiny(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val/acc", (self.net(x).argmax(-1) == y).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    return Tiny


def make_dm(tiny_data) -> FederatedDataModule:
    train, val = tiny_data
    return FederatedDataModule(train, val, partitioner=DirichletPartitioner(num_clients=6, alpha=1.0, seed=0),
                               clients_per_round=3, batch_size=8, local_epochs=2, seed=7)


def _fit(namespace: Any, tiny_data, **overrides: Any) -> tuple[torch.nn.Module, Any]:
    torch.manual_seed(0)
    model = _module(namespace.LightningModule)()
    callbacks = overrides.pop("callbacks", [FederatedAveraging()])
    trainer = namespace.Trainer(**quiet_trainer_kwargs(max_epochs=3, callbacks=callbacks, **overrides))
    trainer.fit(model, datamodule=make_dm(tiny_data))
    return model, trainer


def test_a_lightning_pytorch_trainer_federates_like_a_pytorch_lightning_one(tiny_data):
    expected, _ = _fit(pl, tiny_data)
    got, trainer = _fit(L, tiny_data, callbacks=[FederatedAveraging(), RoundProgressBar()], enable_progress_bar=True)
    assert isinstance(trainer.progress_bar_callback, RoundProgressBar)
    assert trainer.current_epoch == 3
    for (name, a), (_, b) in zip(expected.state_dict().items(), got.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    initial = _module(L.LightningModule)()
    assert not torch.equal(initial.net[0].weight, got.net[0].weight)


def test_the_federated_checks_apply_to_lightning_pytorch_classes(tiny_data):
    mid_round = L.callbacks.ModelCheckpoint(every_n_train_steps=1)
    with pytest.raises(FederatedConfigError, match="every_n_train_steps"):
        _fit(L, tiny_data, callbacks=[FederatedAveraging(), mid_round], enable_checkpointing=True)
    federated = L.Trainer(accelerator="cpu", devices=2, strategy="federated_ddp", logger=False)
    assert isinstance(federated.strategy, UnifiedFederatedDDPStrategy)
    _check_strategy(federated)
    plain = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    with pytest.raises(FederatedConfigError, match="strategy must be single-device"):
        _check_strategy(plain)


def test_callback_refusals_and_stopped_rounds_recognise_lightning_pytorch_callbacks(tiny_data, tmp_path):
    on_exception = L.callbacks.OnExceptionCheckpoint(dirpath=str(tmp_path))
    with pytest.raises(FederatedConfigError, match="OnExceptionCheckpoint"):
        _fit(L, tiny_data, callbacks=[FederatedAveraging(), on_exception], enable_checkpointing=True)

    class StopInRoundOne(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 1:
                trainer.should_stop = True

    checkpoints = L.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    server = FederatedAveraging()
    _fit(L, tiny_data, callbacks=[server, StopInRoundOne(), checkpoints], enable_checkpointing=True)
    assert server.abandoned_round is not None and server.rounds_completed == 1
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["epoch"] == 0
