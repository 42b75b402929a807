"""Mixed precision and several processes, as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_fl import ClassifierModule, FederatedAveraging, FederatedDataModule, federated_trainer_defaults
from lightning_fl.datamodules import DirichletPartitioner

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bf16_mixed_on_cpu_runs_and_learns():
    torch.manual_seed(0)
    model = ClassifierModule(lr=0.05)
    dm = FederatedDataModule(partitioner=DirichletPartitioner(num_clients=20, alpha=0.5, seed=0),
                             clients_per_round=5, batch_size=16)
    trainer = pl.Trainer(**federated_trainer_defaults(
        max_epochs=15, precision="bf16-mixed", accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[FederatedAveraging()]))
    trainer.fit(model, datamodule=dm)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert float(trainer.callback_metrics["val/acc"]) > 0.6  # chance is 0.1


@pytest.mark.slow
@pytest.mark.distributed
def test_cli_with_two_cpu_devices_picks_the_federated_strategy(tmp_path):
    cmd = [
        sys.executable, "-m", "lightning_fl.cli", "fit", "--config", str(ROOT / "configs" / "fedavg_digits.yaml"),
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.max_epochs=3",
        f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=ddp",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    acc = EventAccumulator(str(tmp_path / "ddp" / "version_0"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("fl/clients")] == [10.0, 10.0, 10.0]
    assert [e.step for e in acc.Scalars("val/acc")] == [0, 1, 2]
    assert acc.Scalars("val/acc")[-1].value > 0.3
