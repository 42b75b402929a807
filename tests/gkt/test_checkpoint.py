"""Per-client FedGKT state lives in checkpoints: a resumed run ends exactly where an uninterrupted one ends."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from gkt_setup import make_dm, make_module, one_thread, trainer
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_fl import FederatedRuntimeError


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def run(tmp_path, max_epochs, ckpt_path=None, **module_kwargs):
    module = make_module(model_seed=0, **module_kwargs)
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                           auto_insert_metric_name=False)
    trainer(max_epochs, callbacks=[ckpt], enable_checkpointing=True).fit(
        module, datamodule=make_dm(num_clients=4, clients_per_round=2), ckpt_path=ckpt_path
    )
    return module


def assert_same_state(a, b):
    assert a.store.client_ids() == b.store.client_ids()
    for client_id in a.store.client_ids():
        sa, sb = a.store.get(client_id), b.store.get(client_id)
        for name, value in sa["model"].items():
            assert torch.equal(value, sb["model"][name]), (client_id, name)
        for pa, pb in zip(sa["optimizer"], sb["optimizer"], strict=True):
            for key, value in pa.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(pb[key])), (client_id, key)
    for (name, va), vb in zip(a.server_body.state_dict().items(), b.server_body.state_dict().values(), strict=True):
        assert torch.equal(va, vb), name
    assert torch.equal(a.teacher.logits, b.teacher.logits) and torch.equal(a.teacher.valid, b.teacher.valid)


@pytest.mark.parametrize("spill", [False, True])
def test_resume_restores_every_clients_model(tmp_path, spill):
    kwargs = {"max_resident_clients": 1, "spill_dir": str(tmp_path / "spill")} if spill else {}
    full = run(tmp_path / "full", 4, **kwargs)
    run(tmp_path / "part", 2, **kwargs)
    ckpts = sorted((tmp_path / "part").glob("*.ckpt"))
    assert [p.name for p in ckpts] == ["round0.ckpt", "round1.ckpt"]
    saved = torch.load(ckpts[-1], weights_only=False)["fedgkt"]
    assert len(saved["store"]["states"]) >= 2
    resumed = run(tmp_path / "resumed", 4, ckpt_path=str(ckpts[-1]), **kwargs)
    assert_same_state(full, resumed)
    assert resumed.uplink_bytes_total == full.uplink_bytes_total
    assert [h["fl/uplink_bytes"] for h in resumed.history] == [h["fl/uplink_bytes"] for h in full.history[2:]]


def test_init_state_comes_from_the_checkpoint(tmp_path):
    run(tmp_path / "part", 1)
    ckpt = next((tmp_path / "part").glob("*.ckpt"))
    other_seed = make_module(model_seed=1)
    trainer(2).fit(other_seed, datamodule=make_dm(num_clients=4, clients_per_round=2), ckpt_path=str(ckpt))
    saved = torch.load(ckpt, weights_only=False)["fedgkt"]["init_state"]
    assert all(torch.equal(v, other_seed.init_state[k]) for k, v in saved.items())


class CheckpointMidRound(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            trainer.save_checkpoint("mid.ckpt")


def test_mid_round_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FederatedRuntimeError, match="middle of round 0"):
        trainer(1, callbacks=[CheckpointMidRound()]).fit(make_module(), datamodule=make_dm())
