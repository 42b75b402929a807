"""The Trainer settings federated training needs, in one place."""

from __future__ import annotations

from typing import Any


def federated_trainer_defaults(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``pl.Trainer`` that one-epoch-per-round federated training requires.

    Example:
        >>> import pytorch_lightning as pl
        >>> trainer = pl.Trainer(**federated_trainer_defaults(max_epochs=3, logger=False))
        >>> trainer.reload_dataloaders_every_n_epochs, trainer.max_epochs
        (1, 3)
    """
    kwargs: dict[str, Any] = {"reload_dataloaders_every_n_epochs": 1, "use_distributed_sampler": False}
    kwargs.update(overrides)
    return kwargs
