"""Where the fit is in a round: the round's plan, whether a round is open, the client training now.

Shared by the server callback (:class:`~lightning_fl.federation.host.FederatedAveraging`) and any module that runs
its rounds itself (FedGKT): one plan fetch, one mid-round checkpoint refusal, one "step" log.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pytorch_lightning as pl

from lightning_fl.datamodules.loaders import round_plan_of
from lightning_fl.datamodules.plan import RoundPlan
from lightning_fl.exceptions import FederatedRuntimeError
from lightning_fl.federation.context import ClientContext

__all__ = ["RoundCursor", "RoundView", "log_round_step", "round_plan"]


@runtime_checkable
class RoundView(Protocol):
    """What an algorithm reads of the current round (``context.round``): read-only."""

    @property
    def plan(self) -> RoundPlan:
        """This rank's plan of the current round."""
        ...

    @property
    def client(self) -> ClientContext | None:
        """The client training now (``None`` between clients, on padding batches and without algorithms)."""
        ...

    def client_of(self, batch_idx: int) -> int:
        """The client of batch ``batch_idx`` of this rank's round (-1 for a padding batch)."""
        ...


def round_plan(trainer: "pl.Trainer") -> RoundPlan:
    """The plan of the Trainer's current round, read from the round's train loader
    (:func:`~lightning_fl.datamodules.loaders.round_plan_of`).

    Raises:
        FederatedRuntimeError: When the train loader is not the data module's, or holds another round's plan.
    """
    return round_plan_of(trainer)


def log_round_step(trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
    """Lightning logs epoch-level metrics at the step named "step": make it the round."""
    if trainer.loggers:
        pl_module.log("step", float(trainer.current_epoch), logger=True, prog_bar=False)


class RoundCursor:
    """The current round's plan and position: open or closed, which client trains now, the dispatch by batch index
    (a :class:`RoundView`; the flags are read from the plan's arrays, with no per-batch object).

    Example:
        >>> cursor = RoundCursor()
        >>> cursor.in_round, cursor.current_client, cursor.client
        (False, None, None)
    """

    def __init__(self) -> None:
        self._plan: RoundPlan | None = None
        self.in_round = False
        #: The client whose batches run now (``None`` between clients and on padding batches).
        self.current_client: int | None = None
        self._client: ClientContext | None = None

    @property
    def plan(self) -> RoundPlan:
        """This rank's plan of the current round (which client each batch belongs to).

        Raises:
            FederatedRuntimeError: Before the first round started.
        """
        if self._plan is None:
            raise FederatedRuntimeError("no round has started yet; the plan is fetched at each round's start")
        return self._plan

    @property
    def client(self) -> ClientContext | None:
        """The context of the client training now (built only when algorithms are present), else ``None``."""
        return self._client

    def start_round(self, trainer: "pl.Trainer") -> RoundPlan:
        """Fetch the current round's plan and open the round."""
        return self.open(round_plan(trainer))

    def open(self, plan: RoundPlan) -> RoundPlan:
        """Open a round on ``plan``."""
        self._plan = plan
        self.in_round = True
        self.leave_client()
        return plan

    def end_round(self) -> None:
        """Close the round (after its last batch, or when it is abandoned)."""
        self.in_round = False
        self.leave_client()

    def enter_client(self, client_id: int, context: ClientContext | None) -> None:
        """``client_id`` starts training (``context``: its :class:`ClientContext`, or ``None`` without algorithms)."""
        self.current_client = client_id
        self._client = context

    def leave_client(self) -> None:
        """The client's training is over (its update was sent or rejected)."""
        self.current_client = None
        self._client = None

    def client_of(self, batch_idx: int) -> int:
        """The client of batch ``batch_idx`` (-1 for a padding batch)."""
        return int(self.plan.batch_client[batch_idx])

    def is_first(self, batch_idx: int) -> bool:
        """Whether batch ``batch_idx`` is its client's first."""
        return bool(self.plan.first[batch_idx])

    def is_last(self, batch_idx: int) -> bool:
        """Whether batch ``batch_idx`` is its client's last."""
        return bool(self.plan.last[batch_idx])

    def closes_round(self, batch_idx: int) -> bool:
        """Whether batch ``batch_idx`` is the round's last on this rank."""
        return batch_idx == self.plan.num_batches - 1

    def refuse_mid_round_checkpoint(self, trainer: "pl.Trainer", what: str) -> None:
        """Refuse a checkpoint while a round is open; ``what`` says what the module holds meanwhile.

        Raises:
            FederatedRuntimeError: Inside a round.
        """
        if self.in_round:
            raise FederatedRuntimeError(
                f"refusing to checkpoint in the middle of round {trainer.current_epoch}: {what}. "
                "Checkpoint at round ends (ModelCheckpoint(every_n_epochs=1))"
            )
