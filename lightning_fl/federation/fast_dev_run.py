"""``Trainer(fast_dev_run=n)`` as one federated round in which every client runs ``n`` batches."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info


def adapt_fast_dev_run(trainer: "pl.Trainer") -> None:
    """Turn Lightning's ``fast_dev_run=n`` (``n`` batches in all) into one round of ``n`` batches per client.

    Lightning implements it as ``limit_train_batches=n`` and ``max_steps=n``, which would cut the round after its
    first client's ``n`` batches, before any aggregation. The round is planned short instead (the
    :class:`~lightning_fl.datamodules.FederatedDataModule` cuts each client to ``n`` batches), so both limits are
    lifted; Lightning keeps the rest (one epoch, ``n`` validation batches, no checkpoints, a dummy logger).
    Does nothing without ``fast_dev_run``. Called at fit setup, before the trainer's settings are checked.

    Example:
        >>> trainer = pl.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False)
        >>> adapt_fast_dev_run(trainer)
        >>> trainer.limit_train_batches, trainer.fit_loop.max_steps, trainer.max_epochs
        (1.0, -1, 1)
    """
    fast_dev_run = getattr(trainer, "fast_dev_run", False)  # set by Trainer.__init__
    if not fast_dev_run:
        return
    batches = int(fast_dev_run)
    trainer.limit_train_batches = 1.0
    trainer.fit_loop.epoch_loop.max_steps = -1
    rank_zero_info(f"fast_dev_run={fast_dev_run}: one round in which every client runs {batches} batch(es)")
