"""What a fit of a :class:`~lightning_fl.datamodules.FederatedDataModule` needs from the Trainer, checked at setup."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import pytorch_lightning as pl

from lightning_fl.datamodules.plan import RoundDriver
from lightning_fl.exceptions import FederatedConfigError


@runtime_checkable
class RoundPlugin(Protocol):
    """An algorithm callback that plugs into the server's rounds (``FederatedAlgorithm``): it refuses a Trainer
    without the server itself, naming itself, so the check below lets it speak."""

    def on_federated_fit_start(self, context: Any) -> None:
        """Called by the server at fit start."""
        ...


def check_server_present(trainer: "pl.Trainer") -> None:
    """Refuse a fit in which nothing federates the clients.

    Without a server, Lightning would train the round's clients one after another on one model: no averaging, no
    per-client restart, no error. A fit is federated when a :class:`~lightning_fl.datamodules.plan.RoundDriver`
    runs its rounds: a callback such as :class:`FederatedAveraging`, or a module that runs its rounds itself (it
    says so with ``plan_request()``, or with ``uses_weight_averaging = False`` as FedGKT's module does).

    Raises:
        FederatedConfigError: When neither is present; the message says which callback to add.
    """
    callbacks = list(trainer.callbacks)  # type: ignore[attr-defined]
    # an algorithm callback (Scaffold, FedProx, ...) refuses a Trainer without the server itself, naming itself
    if any(isinstance(cb, (RoundDriver, RoundPlugin)) for cb in callbacks):
        return
    module = trainer.lightning_module
    if isinstance(module, RoundDriver) or getattr(module, "uses_weight_averaging", True) is False:
        return
    names = sorted(type(cb).__name__ for cb in callbacks)
    raise FederatedConfigError(
        "a FederatedDataModule is fitted without a server: add the server callback, "
        "Trainer(callbacks=[FederatedAveraging(), ...]) (or use a module that runs its own rounds, such as "
        "FedGKTModule); without it the clients would train one after another on one model with no federation. "
        f"Got callbacks {names} and module {type(module).__name__}"
    )
