"""Writes ``data/pre_i12.ckpt``: one round of the old-checkpoint setup, run on the code from before issue 12's move.

Kept for the record; the file it writes is committed. Run from the repository root:
``PYTHONPATH=$PWD:tests python tests/federation/make_pre_i12_checkpoint.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from old_ckpt_model import (
    OldCheckpointModel,
    old_checkpoint_callbacks,
    old_checkpoint_datamodule,
    old_checkpoint_trainer_kwargs,
)

if __name__ == "__main__":
    pl.seed_everything(0)
    torch.manual_seed(0)
    trainer = pl.Trainer(**old_checkpoint_trainer_kwargs(1, list(old_checkpoint_callbacks())))
    trainer.fit(OldCheckpointModel(), datamodule=old_checkpoint_datamodule())
    out = Path(__file__).parent / "data" / "pre_i12.ckpt"
    trainer.save_checkpoint(out)
    print(out, out.stat().st_size)
