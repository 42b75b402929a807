"""What a fit of a :class:`~lightning_fl.datamodules.FederatedDataModule` needs from the Trainer, checked at setup."""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_fl.exceptions import FederatedConfigError


def check_server_present(trainer: "pl.Trainer") -> None:
    """Refuse a fit in which nothing federates the clients.

    Without a server, Lightning would train the round's clients one after another on one model: no averaging, no
    per-client restart, no error. A fit is federated when the Trainer holds a :class:`FederatedAveraging` callback,
    or when the module runs its rounds itself and says so with ``uses_weight_averaging = False`` (FedGKT's module).

    Raises:
        FederatedConfigError: When neither is present; the message says which callback to add.
    """
    from lightning_fl.callbacks.algorithm import FederatedAlgorithm
    from lightning_fl.callbacks.fedavg import FederatedAveraging

    callbacks = list(trainer.callbacks)  # type: ignore[attr-defined]
    # an algorithm callback (Scaffold, FedProx, ...) refuses a Trainer without the server itself, naming itself
    if any(isinstance(cb, (FederatedAveraging, FederatedAlgorithm)) for cb in callbacks):
        return
    module = trainer.lightning_module
    if getattr(module, "uses_weight_averaging", True) is False:
        return
    names = sorted(type(cb).__name__ for cb in callbacks)
    raise FederatedConfigError(
        "a FederatedDataModule is fitted without a server: add the server callback, "
        "Trainer(callbacks=[FederatedAveraging(), ...]) (or use a module that runs its own rounds, such as "
        "FedGKTModule); without it the clients would train one after another on one model with no federation. "
        f"Got callbacks {names} and module {type(module).__name__}"
    )
