"""Resuming from a checkpoint file that cannot be trusted is one clear CheckpointError; good files load weights-only."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, quiet_trainer_kwargs
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_fl import FederatedAveraging, FederatedDataModule
from lightning_fl.checkpoint import DIGEST_KEY
from lightning_fl.datamodules import IIDPartitioner
from lightning_fl.exceptions import CheckpointError
from lightning_fl.server import ServerAdam


def fit(tiny_data, root: Path, rounds: int, ckpt_path: str | None = None) -> FederatedAveraging:
    torch.manual_seed(0)
    dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=6, seed=0), clients_per_round=2,
                             batch_size=10, seed=1)
    fedavg = FederatedAveraging(server_optimizer=ServerAdam(lr=0.05))
    ckpt = ModelCheckpoint(dirpath=root, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                           auto_insert_metric_name=False)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[fedavg, ckpt], enable_checkpointing=True))
    trainer.fit(TinyClassifier(), datamodule=dm, ckpt_path=ckpt_path)
    return fedavg


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    from conftest import make_tiny_data

    root = tmp_path_factory.mktemp("ckpt")
    fit((make_tiny_data(120, seed=0), make_tiny_data(60, seed=1)), root, rounds=1)
    return root / "round0.ckpt"


def resume(tiny_data, tmp_path, path: Path) -> FederatedAveraging:
    return fit(tiny_data, tmp_path / "resumed", rounds=2, ckpt_path=str(path))


def test_good_checkpoint_resumes_and_is_loaded_weights_only(tiny_data, tmp_path, saved, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert isinstance(real_load(saved, weights_only=True)[DIGEST_KEY], str)
    fedavg = resume(tiny_data, tmp_path, saved)
    assert fedavg.rounds_completed == 2
    assert calls == [True]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_file_is_one_clear_error(tiny_data, tmp_path, saved, damage):
    data = saved.read_bytes()
    bad = tmp_path / f"{damage}.ckpt"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint " * 64, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=rf"checkpoint '.*{damage}.ckpt' is corrupt or truncated") as info:
        resume(tiny_data, tmp_path, bad)
    assert "weights_only=False" not in str(info.value)


def test_missing_file_is_named(tiny_data, tmp_path):
    with pytest.raises(CheckpointError, match=r"ckpt_path '.*nowhere.ckpt' does not exist"):
        resume(tiny_data, tmp_path, tmp_path / "nowhere.ckpt")


def test_flipped_byte_inside_a_tensor_is_detected(tiny_data, tmp_path, saved):
    checkpoint = torch.load(saved, weights_only=True)
    weight = checkpoint["state_dict"]["net.0.weight"]
    data = bytearray(saved.read_bytes())
    at = data.find(weight.numpy().tobytes()[:64])
    assert at > 0
    data[at + 5] ^= 0x10
    bad = tmp_path / "flipped.ckpt"
    bad.write_bytes(bytes(data))
    assert not torch.equal(torch.load(bad, weights_only=True)["state_dict"]["net.0.weight"], weight)  # torch loads it
    with pytest.raises(CheckpointError, match=r"flipped.ckpt' is corrupt: .* do not match the SHA-256 digest"):
        resume(tiny_data, tmp_path, bad)


@pytest.mark.parametrize("keep_digest", [True, False])
def test_edited_nan_weight_is_refused(tiny_data, tmp_path, saved, keep_digest):
    checkpoint = torch.load(saved, weights_only=True)
    checkpoint["state_dict"]["net.2.bias"][1] = math.nan
    if not keep_digest:  # as a checkpoint written before digests existed
        del checkpoint[DIGEST_KEY]
    bad = tmp_path / "nan.ckpt"
    torch.save(checkpoint, bad)
    expected = r"do not match the SHA-256 digest" if keep_digest else r"non-finite weights: 1 NaN or Inf .*'net.2.bias'"
    with pytest.raises(CheckpointError, match=expected):
        resume(tiny_data, tmp_path, bad)


class Opaque:
    pass


def test_checkpoint_holding_python_objects_is_refused(tiny_data, tmp_path, saved):
    checkpoint = torch.load(saved, weights_only=True)
    checkpoint["extra"] = Opaque()
    bad = tmp_path / "objects.ckpt"
    torch.save(checkpoint, bad)
    with pytest.raises(CheckpointError, match=r"holds Python objects that a safe \(weights_only=True\) load refuses"):
        resume(tiny_data, tmp_path, bad)


class HalfStoredClassifier(TinyClassifier):
    """Stores its weights as bfloat16 in its own ``on_save_checkpoint`` (which Lightning runs after callbacks')."""

    def on_save_checkpoint(self, checkpoint):
        checkpoint["state_dict"] = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
                                    for k, v in checkpoint["state_dict"].items()}


def test_a_module_that_edits_its_checkpoint_still_resumes(tiny_data, tmp_path):
    def run(rounds: int, ckpt_path: str | None = None) -> FederatedAveraging:
        dm = FederatedDataModule(*tiny_data, partitioner=IIDPartitioner(num_clients=6, seed=0), clients_per_round=2,
                                 batch_size=10, seed=1)
        fedavg = FederatedAveraging()
        ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                               auto_insert_metric_name=False)
        trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[fedavg, ckpt],
                                                    enable_checkpointing=True))
        trainer.fit(HalfStoredClassifier(), datamodule=dm, ckpt_path=ckpt_path)
        return fedavg

    run(1)
    saved = torch.load(tmp_path / "round0.ckpt", weights_only=True)
    assert next(iter(saved["state_dict"].values())).dtype == torch.bfloat16 and DIGEST_KEY in saved
    assert run(2, str(tmp_path / "round0.ckpt")).rounds_completed == 2
