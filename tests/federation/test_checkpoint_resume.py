"""A run stopped after round k and resumed from its checkpoint ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, quiet_trainer_kwargs
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_fl import FederatedAveraging, FederatedDataModule, FederatedRuntimeError
from lightning_fl.datamodules import DirichletPartitioner, IIDPartitioner
from lightning_fl.server import ServerAdam


def run(tiny_data, tmp_path, max_epochs, ckpt_path=None, init_state=None):
    model = TinyClassifier(batchnorm=True)
    if init_state is not None:
        model.load_state_dict(init_state)
    # 15 samples per client, batches of 5: no singleton batch for BatchNorm1d
    dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=8, seed=0),
                             clients_per_round=3, batch_size=5, seed=5)
    fedavg = FederatedAveraging(server_optimizer=ServerAdam(lr=0.05))
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                           auto_insert_metric_name=False)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=max_epochs, callbacks=[fedavg, ckpt],
                                                enable_checkpointing=True))
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, fedavg


def test_resume_is_bit_identical(tiny_data, tmp_path):
    torch.manual_seed(0)
    init = TinyClassifier(batchnorm=True).state_dict()
    full, full_cb = run(tiny_data, tmp_path / "full", 5, init_state=init)
    run(tiny_data, tmp_path / "part", 2, init_state=init)
    ckpts = sorted((tmp_path / "part").glob("*.ckpt"))
    assert [p.name for p in ckpts] == ["round0.ckpt", "round1.ckpt"]
    resumed, resumed_cb = run(tiny_data, tmp_path / "resumed", 5, ckpt_path=str(ckpts[-1]))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=False):
        assert torch.equal(a, b), name
    assert resumed_cb.server_optimizer.steps == 5
    assert resumed_cb.uplink_bytes_total == full_cb.uplink_bytes_total
    assert [h["fl/uplink_bytes"] for h in resumed_cb.history] == [h["fl/uplink_bytes"] for h in full_cb.history[2:]]


class CheckpointMidRound(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            trainer.save_checkpoint("mid.ckpt")


def test_mid_round_checkpoint_is_refused(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dm = FederatedDataModule(*tiny_data, partitioner=DirichletPartitioner(num_clients=4, alpha=1.0),
                             clients_per_round=2)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=[FederatedAveraging(), CheckpointMidRound()]))
    with pytest.raises(FederatedRuntimeError, match="middle of round 0"):
        trainer.fit(TinyClassifier(), datamodule=dm)
