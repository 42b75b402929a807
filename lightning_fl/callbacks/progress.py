"""A progress bar that counts rounds and names the client being trained."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from typing_extensions import override


class RoundProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, with "Round k" instead of "Epoch k" and the current client in the postfix.

    Example:
        >>> RoundProgressBar(refresh_rate=10).refresh_rate
        10
    """

    @override
    def on_train_epoch_start(self, trainer: "pl.Trainer", *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Round {trainer.current_epoch}")

    @override
    def get_metrics(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> dict[str, int | str | float]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("step", None)
        from lightning_fl.callbacks.fedavg import FederatedAveraging

        for cb in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(cb, FederatedAveraging) and cb.current_client is not None:
                items["client"] = cb.current_client
        return items
