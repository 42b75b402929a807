"""Lightning callbacks and Trainer settings that would evaluate, checkpoint or keep a client's weights, refused before
training starts."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint, OnExceptionCheckpoint, StochasticWeightAveraging
from torch import nn

from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.namespaces import both


def check_callbacks(trainer: "pl.Trainer") -> None:
    """Raise :class:`FederatedConfigError` for callbacks and settings that act in the middle of a round.

    - a time-based ``val_check_interval`` would validate a client's weights in the middle of a round;
    - ``ModelCheckpoint(save_on_exception=True)`` and ``OnExceptionCheckpoint`` write a checkpoint in the middle of
      a round (a client's weights, and a loop position no round can resume from): a round that an exception
      interrupts is abandoned, so resume from the last round-end checkpoint (``ModelCheckpoint(save_last=True)``);
    - ``StochasticWeightAveraging`` with a BatchNorm model runs its BatchNorm-update epoch as an extra federated round
      that starts every client from the global weights, discarding the SWA average.
    """
    interval = getattr(trainer, "_val_check_time_interval", None)
    if interval is not None:
        raise FederatedConfigError(
            "val_check_interval must be 1.0 (a time interval would validate a client's weights in the middle of a "
            f"round; use check_val_every_n_epoch to validate every k rounds), got a time interval of {interval}s"
        )
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, both(OnExceptionCheckpoint)) or (
            isinstance(cb, both(ModelCheckpoint)) and getattr(cb, "save_on_exception", False)
        ):
            what = "OnExceptionCheckpoint" if isinstance(cb, both(OnExceptionCheckpoint)) else "save_on_exception=True"
            raise FederatedConfigError(
                f"checkpoints on exception are refused, got {what}: an exception stops a round in the middle, the "
                "round is abandoned and such a checkpoint would record a position no round can resume from; resume "
                "from the last round-end checkpoint instead (ModelCheckpoint(save_last=True))"
            )
        if isinstance(cb, both(StochasticWeightAveraging)) and _has_batchnorm(trainer.lightning_module):
            raise FederatedConfigError(
                "StochasticWeightAveraging is refused for a module with BatchNorm layers, got "
                f"{type(trainer.lightning_module).__name__} with BatchNorm: SWA's BatchNorm-update epoch would run as "
                "an extra federated round that starts every client from the global weights, discarding the SWA "
                "average. Without BatchNorm, SWA averages the global models at the starts of its rounds"
            )


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
