"""Where the fit is in a round: the round's plan, whether a round is open, the client training now.

Shared by the server callback (:class:`~lightning_fl.federation.host.FederatedAveraging`) and any module that runs
its rounds itself (FedGKT): one plan fetch, one mid-round checkpoint refusal, one "step" log.
"""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.datamodules.plan import RoundPlan
from lightning_fl.exceptions import FederatedRuntimeError

__all__ = ["RoundCursor", "log_round_step", "round_plan"]


def round_plan(trainer: "pl.Trainer") -> RoundPlan:
    """The plan of the Trainer's current round, as the data module built it for this round's train loader.

    Raises:
        FederatedRuntimeError: When the data module has no plan for the current round.
    """
    dm = trainer.datamodule  # type: ignore[attr-defined]
    plan = dm.current_plan if isinstance(dm, FederatedDataModule) else None
    if plan is None or plan.round_idx != trainer.current_epoch:
        raise FederatedRuntimeError(
            f"the data module has no plan for round {trainer.current_epoch}; is the train loader the "
            "FederatedDataModule's and reload_dataloaders_every_n_epochs=1?"
        )
    return plan


def log_round_step(trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
    """Lightning logs epoch-level metrics at the step named "step": make it the round."""
    if trainer.loggers:
        pl_module.log("step", float(trainer.current_epoch), logger=True, prog_bar=False)


class RoundCursor:
    """The current round's plan and position: open or closed, and which client trains now.

    Example:
        >>> cursor = RoundCursor()
        >>> cursor.in_round, cursor.current_client
        (False, None)
    """

    def __init__(self) -> None:
        self._plan: RoundPlan | None = None
        self.in_round = False
        #: The client whose batches run now (``None`` between clients and on padding batches).
        self.current_client: int | None = None

    @property
    def plan(self) -> RoundPlan:
        """This rank's plan of the current round (which client each batch belongs to).

        Raises:
            FederatedRuntimeError: Before the first round started.
        """
        if self._plan is None:
            raise FederatedRuntimeError("no round has started yet; the plan is fetched at each round's start")
        return self._plan

    def start_round(self, trainer: "pl.Trainer") -> RoundPlan:
        """Fetch the current round's plan and open the round."""
        self._plan = round_plan(trainer)
        self.in_round = True
        return self._plan

    def end_round(self) -> None:
        """Close the round (after its last batch, or when it is abandoned)."""
        self.in_round = False
        self.current_client = None

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
