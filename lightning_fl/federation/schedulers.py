"""Step-interval learning-rate schedulers on a federated clock.

Lightning steps a scheduler with ``"interval": "step"`` after every optimizer step of the rank, so inside a round
the schedule would run on from one client to the next: clients would train at learning rates that depend on their
place in the round and on the number of devices, and a total taken from round 0's batch count would be exceeded
by a larger later round. Here the schedule's clock counts the local steps of one client instead:

* one round lasts ``S = datamodule.max_client_steps`` steps (the largest client's local steps per round);
* the ``j``-th local step (0-based) of any client in round ``r`` runs at the schedule's step ``r * S + j``: every
  client of a round starts from the same state and sees the same learning-rate sequence, whatever the client
  order or the number of devices;
* ``trainer.estimated_stepping_batches`` is ``max_epochs * S``, so ``OneCycleLR(total_steps=...)`` or a warm-up
  and cosine ``LambdaLR`` written against it spans the whole federated training and never runs past its end.

The scheduler's state (and the learning rate and momentum it writes into the optimizer) is restored at every
client's start, as the server callback clears the optimizer state; padding batches start from it too. At the
round's end the schedule is advanced by ``S`` steps, so checkpoints hold the state of the next round's start.
Epoch-interval schedulers are left to Lightning: they step once per round, the same on every rank.
"""

from __future__ import annotations

import copy
from typing import Any

import pytorch_lightning as pl
from torch.optim.lr_scheduler import OneCycleLR

from lightning_fl.exceptions import FederatedConfigError

_ESTIMATE_HOOK = "_lightning_fl_stepping_batches"


class StepSchedules:
    """The clock of a fit's step-interval schedulers (built at fit start, driven by the server callback).

    Args:
        trainer: The Trainer, after its optimizers and schedulers are configured.
        steps_per_round: ``S``, the largest client's local steps in one round.

    Raises:
        FederatedConfigError: For a step-interval scheduler that cannot follow the clock (a frequency other than 1,
            ``ReduceLROnPlateau``, an epoch-interval scheduler on the same optimizer, or a ``OneCycleLR`` whose
            ``total_steps`` is shorter than the training).
    """

    def __init__(self, trainer: "pl.Trainer", steps_per_round: int) -> None:
        module = trainer.lightning_module
        configs = list(trainer.lr_scheduler_configs) if module.automatic_optimization else []
        self.steps_per_round = steps_per_round
        self.schedulers: list[Any] = [c.scheduler for c in configs if c.interval == "step"]
        _check_configs(configs, trainer, steps_per_round)
        self._snapshot: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []

    def __bool__(self) -> bool:
        return bool(self.schedulers)

    def round_start(self) -> None:
        """Keep the state every client of this round starts from (the scheduler as the last round left it)."""
        self._snapshot = [
            (copy.deepcopy(s.state_dict()), [_hyper(g) for g in s.optimizer.param_groups]) for s in self.schedulers
        ]

    def client_start(self) -> None:
        """Put every step scheduler (and the values it writes into its optimizer) back at the round's start."""
        for scheduler, (state, groups) in zip(self.schedulers, self._snapshot, strict=True):
            scheduler.load_state_dict(copy.deepcopy(state))
            for group, saved in zip(scheduler.optimizer.param_groups, groups, strict=True):
                group.update(copy.deepcopy(saved))

    def round_end(self) -> None:
        """Move the clock to the next round's start: the round's start plus ``S`` steps."""
        self.client_start()
        for scheduler in self.schedulers:
            for _ in range(self.steps_per_round):
                scheduler.step()


def _hyper(group: dict[str, Any]) -> dict[str, Any]:
    """A parameter group's hyperparameters (what a scheduler writes: lr, momentum, betas), without its tensors."""
    return {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}


def _check_configs(configs: list[Any], trainer: "pl.Trainer", steps_per_round: int) -> None:
    """Refuse the step-interval schedulers the clock cannot drive, naming the scheduler and what to change."""
    epoch_optimizers = {id(c.scheduler.optimizer) for c in configs if c.interval != "step"}
    rounds = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
    for config in configs:
        if config.interval != "step":
            continue
        name = type(config.scheduler).__name__
        if config.reduce_on_plateau:
            raise FederatedConfigError(
                f"{name} with interval='step' is not supported: its state follows a metric from one client to the "
                "next. Use interval='epoch' (one step per round, after validation)"
            )
        if config.frequency != 1:
            raise FederatedConfigError(
                f"frequency must be 1 for the interval='step' scheduler {name} (its phase would follow a client's "
                f"place in the round), got {config.frequency}"
            )
        if id(config.scheduler.optimizer) in epoch_optimizers:
            raise FederatedConfigError(
                f"{name} with interval='step' shares its optimizer with an interval='epoch' scheduler; restarting "
                "it for every client would undo the other's learning rate. Combine them in one scheduler "
                "(SequentialLR, LambdaLR) or give each its own optimizer"
            )
        if isinstance(config.scheduler, OneCycleLR) and rounds is not None:
            needed = rounds * steps_per_round
            if config.scheduler.total_steps < needed:
                raise FederatedConfigError(
                    f"OneCycleLR total_steps must be at least max_epochs * max_client_steps = {rounds} * "
                    f"{steps_per_round} = {needed} (a client's local step in round r runs at schedule step "
                    f"r * {steps_per_round} + j), got {config.scheduler.total_steps}; use "
                    "total_steps=self.trainer.estimated_stepping_batches"
                )


def install_stepping_estimate(trainer: "pl.Trainer", steps_per_round: Any) -> None:
    """Make ``trainer.estimated_stepping_batches`` answer ``max_epochs * steps_per_round()`` for this Trainer.

    Lightning's own estimate multiplies round 0's batch count on this rank by the number of rounds: later rounds
    can be larger, and the count depends on the number of devices. The property of the Trainer's class is
    wrapped once; it answers differently only for a Trainer that this function marked (until
    :func:`remove_stepping_estimate`), so other Trainers are untouched.

    Args:
        trainer: The Trainer of a federated fit.
        steps_per_round: A function returning ``S``, called when the estimate is asked for.
    """
    cls = type(trainer)
    if not getattr(cls, "_lightning_fl_estimate_wrapped", False):
        original = cls.estimated_stepping_batches

        def estimated_stepping_batches(self: "pl.Trainer") -> int | float:
            hook = self.__dict__.get(_ESTIMATE_HOOK)
            return hook(self) if hook is not None else original.fget(self)  # type: ignore[attr-defined]

        estimated_stepping_batches.__doc__ = original.__doc__
        cls.estimated_stepping_batches = property(estimated_stepping_batches)  # type: ignore[method-assign,assignment]
        cls._lightning_fl_estimate_wrapped = True  # type: ignore[attr-defined]

    def federated_estimate(t: "pl.Trainer") -> int | float:
        if t.max_epochs is None or t.max_epochs < 0:
            return float("inf")
        return max(t.max_epochs, 1) * int(steps_per_round())

    trainer.__dict__[_ESTIMATE_HOOK] = federated_estimate


def remove_stepping_estimate(trainer: "pl.Trainer") -> None:
    """Give ``trainer.estimated_stepping_batches`` back to Lightning (at the end of a federated fit)."""
    trainer.__dict__.pop(_ESTIMATE_HOOK, None)
