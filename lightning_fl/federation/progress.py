"""A progress bar over rounds that names the client being trained."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from typing_extensions import override

from lightning_fl.checks import check_bool, check_int
from lightning_fl.federation.cursor import RoundCursor
from lightning_fl.namespaces import TQDMProgressBar


class RoundProgressBar(TQDMProgressBar):
    """One bar for the whole run that advances once per round, showing the round, the client being trained and
    the latest metrics (``Rounds: 37/100 [round=37, client=12, val/acc=0.93]``).

    Lightning's default bar restarts every epoch and opens a validation bar every round, which for short
    federated rounds costs more than the training itself; this bar opens neither.

    Args:
        refresh_rate: Update the postfix every this many batches.
        process_position: As in ``TQDMProgressBar``.
        leave: As in ``TQDMProgressBar``.

    Example:
        >>> RoundProgressBar(refresh_rate=10).refresh_rate
        10
    """

    def __init__(self, refresh_rate: int = 5, process_position: int = 0, leave: bool = True) -> None:
        check_int("refresh_rate", refresh_rate, low=1)  # 0 would divide by zero below; leave the bar out instead
        check_int("process_position", process_position, low=0)
        check_bool("leave", leave)
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)

    @override
    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.train_progress_bar = self.init_train_tqdm()
        total = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        self.train_progress_bar.reset(total=total)
        self.train_progress_bar.n = trainer.current_epoch
        self.train_progress_bar.set_description("Rounds")
        self.train_progress_bar.refresh()

    @override
    def on_train_epoch_start(self, trainer: "pl.Trainer", *_: Any) -> None:
        return

    @override
    def on_train_batch_end(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (batch_idx + 1) % self.refresh_rate == 0 and self._train_progress_bar is not None:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    @override
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        bar = self.train_progress_bar
        bar.n = trainer.current_epoch + 1
        bar.set_postfix(self.get_metrics(trainer, pl_module))

    def _fitting(self, trainer: "pl.Trainer") -> bool:
        return trainer.state.fn == "fit" and not trainer.sanity_checking

    @override
    def on_validation_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not self._fitting(trainer):
            super().on_validation_start(trainer, pl_module)

    @override
    def on_validation_batch_start(self, trainer: "pl.Trainer", *args: Any, **kwargs: Any) -> None:
        if not self._fitting(trainer):
            super().on_validation_batch_start(trainer, *args, **kwargs)

    @override
    def on_validation_batch_end(self, trainer: "pl.Trainer", *args: Any, **kwargs: Any) -> None:
        if not self._fitting(trainer):
            super().on_validation_batch_end(trainer, *args, **kwargs)

    @override
    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not self._fitting(trainer):
            super().on_validation_end(trainer, pl_module)
        elif self._train_progress_bar is not None:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    @override
    def get_metrics(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule"
    ) -> dict[str, int | str | float | dict[str, float]]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("step", None)
        items.pop("v_num", None)
        items = {"round": trainer.current_epoch, **items}
        # the round's driver (the server callback, or a module that runs its own rounds) holds the round's cursor
        for owner in [*trainer.callbacks, pl_module]:  # type: ignore[attr-defined]
            cursor = getattr(owner, "round_cursor", None)
            if isinstance(cursor, RoundCursor) and cursor.current_client is not None:
                items["client"] = cursor.current_client
        return items
