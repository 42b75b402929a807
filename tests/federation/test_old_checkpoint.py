"""A checkpoint written before issue 12 moved the runtime (``data/pre_i12.ckpt``) resumes on the new layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytorch_lightning as pl
import torch
from old_ckpt_model import (
    OldCheckpointModel,
    old_checkpoint_callbacks,
    old_checkpoint_datamodule,
    old_checkpoint_trainer_kwargs,
)

PRE_I12 = Path(__file__).parent / "data" / "pre_i12.ckpt"


def test_checkpoint_from_before_the_move_resumes(tmp_path):
    ckpt = shutil.copy(PRE_I12, tmp_path / "pre_i12.ckpt")  # the fit must not write next to the fixture
    saved = torch.load(ckpt, weights_only=True)
    assert saved["callbacks"]["FederatedAveraging"]["rounds_completed"] == 1
    fedavg, scaffold = old_checkpoint_callbacks()
    trainer = pl.Trainer(**old_checkpoint_trainer_kwargs(2, [fedavg, scaffold]), default_root_dir=tmp_path)
    trainer.fit(OldCheckpointModel(), datamodule=old_checkpoint_datamodule(), ckpt_path=ckpt)
    assert fedavg.rounds_completed == 2
    assert fedavg.server_optimizer.steps == 2
    assert fedavg.uplink_bytes_total > saved["callbacks"]["FederatedAveraging"]["uplink_bytes_total"]
    assert scaffold.server_control is not None and bool(scaffold.server_control.abs().sum() > 0)
    assert not torch.equal(scaffold.server_control, saved["callbacks"]["Scaffold"]["server_control"])
