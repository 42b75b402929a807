"""The Trainer settings federated training needs, in one place."""

from __future__ import annotations

from typing import Any


def federated_trainer_defaults(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``pl.Trainer`` that one-epoch-per-round federated training once required.

    No longer required: the server callback sets ``reload_dataloaders_every_n_epochs=1`` itself when it is left at
    0, and the data module's loaders are not ``DataLoader`` objects, so ``use_distributed_sampler`` has no effect on
    them. Kept for old code and the CLI; the two values it returns are harmless.

    Example:
        >>> import pytorch_lightning as pl
        >>> trainer = pl.Trainer(**federated_trainer_defaults(max_epochs=3, logger=False))
        >>> trainer.reload_dataloaders_every_n_epochs, trainer.max_epochs
        (1, 3)
    """
    kwargs: dict[str, Any] = {"reload_dataloaders_every_n_epochs": 1, "use_distributed_sampler": False}
    kwargs.update(overrides)
    return kwargs
