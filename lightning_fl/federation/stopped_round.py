"""A round that does not reach its last batch is abandoned: the module gets the round's starting global model back.

Lightning can leave a training epoch early: ``trainer.should_stop = True`` (set by a module or a callback,
``EarlyStopping``, ``Trainer(max_time=...)``'s Timer) ends it after the current batch, then validates and runs the
epoch-end hooks; an exception (``KeyboardInterrupt``) leaves it at once. In the middle of a round the module holds a
client's weights, and the round's aggregate is incomplete. The server callback then abandons the round (nothing of
it is aggregated, no ``fl/`` scalars are logged, ``rounds_completed`` stays), writes the global model the round
started from back into the module (the last completed round's, or the initial model), and keeps Lightning's
``ModelCheckpoint`` from saving for the rest of the fit: Lightning's loop counts the stopped epoch as done, so a
checkpoint would resume after a round that never happened. A resumed run restarts the abandoned round from the
last round-end checkpoint and reproduces the uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_fl.namespaces import both


@dataclass(frozen=True)
class AbandonedRound:
    """A round stopped before its last batch.

    Attributes:
        round_idx: The round.
        reason: What stopped it (``"trainer.should_stop"`` or the exception's type).

    Example:
        >>> AbandonedRound(3, "KeyboardInterrupt").describe()[:90]
        'round 3 was stopped before its end (KeyboardInterrupt) and abandoned: nothing of it is agg'
    """

    round_idx: int
    reason: str

    def describe(self) -> str:
        """One sentence for the user: what was stopped and which model the module holds now."""
        held = f"round {self.round_idx - 1}'s global model" if self.round_idx > 0 else "the initial model"
        return (
            f"round {self.round_idx} was stopped before its end ({self.reason}) and abandoned: nothing of it is "
            f"aggregated and the module holds {held}; no checkpoint is written for the rest of this fit (resume "
            "from the last round-end checkpoint to rerun the round)"
        )

    def refuse_checkpoint(self) -> str:
        """Why a full checkpoint after the abandoned round is refused, and what to do instead."""
        return (
            f"refusing to checkpoint: {self.describe()}. Lightning's loop counts round {self.round_idx} as done, so "
            "a checkpoint now would resume after a round that never happened; save the weights alone "
            "(trainer.save_checkpoint(path, weights_only=True)) or resume from the last round-end checkpoint"
        )


class CheckpointMute:
    """Keeps every ``ModelCheckpoint`` of a Trainer from saving until :meth:`unmute` (at fit end)."""

    def __init__(self) -> None:
        self._save_last: list[tuple[ModelCheckpoint, bool | Literal["link"] | None]] = []

    def mute(self, trainer: "pl.Trainer") -> None:
        """Skip the epoch-end, validation-end and train-end saves of the current fit."""
        for cb in trainer.checkpoint_callbacks:
            if not isinstance(cb, both(ModelCheckpoint)):
                continue
            # ModelCheckpoint's own "already saved at this step" marker: its epoch-end and validation-end saves skip
            cb._last_global_step_saved = trainer.global_step
            if cb.save_last:  # else saved at train end when nothing was saved before
                self._save_last.append((cb, cb.save_last))
                cb.save_last = False

    def unmute(self) -> None:
        """Give back the ``save_last`` settings switched off by :meth:`mute`."""
        for cb, save_last in self._save_last:
            cb.save_last = save_last
        self._save_last = []
