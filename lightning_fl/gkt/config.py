"""Argument and Trainer checks of :class:`~lightning_fl.gkt.module.FedGKTModule`, and its optimizers."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_fl.checks import check_bool, check_choice, check_int, check_non_negative, check_positive
from lightning_fl.exceptions import FederatedConfigError

_POSITIVE_INTS = ("num_classes", "in_channels", "server_epochs", "server_batch_size", "eval_batch_size")
_NON_NEGATIVE = ("alpha", "beta", "momentum", "weight_decay")
_POSITIVE = ("temperature", "client_lr", "server_lr")


def check_gkt_args(args: dict[str, Any]) -> None:
    """Raise :class:`FederatedConfigError` for a FedGKT argument outside its allowed range.

    Example:
        >>> check_gkt_args({"alpha": -1.0})
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.FederatedConfigError: alpha must be a finite number >= 0, got -1.0
    """
    for name in _POSITIVE_INTS:
        check_int(name, args.get(name, 1), low=1)
    for name in _NON_NEGATIVE:
        check_non_negative(name, args.get(name, 0.0))
    for name in _POSITIVE:
        check_positive(name, args.get(name, 1.0))
    check_choice("optimizer", args.get("optimizer", "adam"), ("adam", "sgd"))
    check_choice("eval_clients", args.get("eval_clients", "round"), ("round", "first"))
    check_bool("keep_client_optimizer_state", args.get("keep_client_optimizer_state", True))
    if args.get("seed") is not None:
        check_int("seed", args["seed"], low=0)


def check_gkt_trainer(trainer: "pl.Trainer") -> None:
    """Refuse what FedGKT cannot run: several processes, or a FederatedAveraging callback beside it.

    Raises:
        FederatedConfigError: If ``trainer.world_size > 1`` or a FederatedAveraging callback is configured.
    """
    from lightning_fl.federation.host import FederatedAveraging

    if trainer.world_size > 1:
        raise FederatedConfigError(
            "FedGKT needs devices=1 (a single process): the server body trains on the features of every client of "
            "the round, and gathering them across processes is not implemented; got world_size="
            f"{trainer.world_size}"
        )
    averaging = [type(cb).__name__ for cb in trainer.callbacks if isinstance(cb, FederatedAveraging)]  # type: ignore[attr-defined]
    if averaging:
        raise FederatedConfigError(
            "FedGKT cannot be combined with FederatedAveraging: its clients keep their own models and exchange "
            f"features and logits, not weights. Remove the callback; got callbacks {averaging}"
        )


def make_optimizer(
    name: str, model: nn.Module, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (``name="adam"``, momentum unused) or ``torch.optim.SGD`` over ``model``'s parameters.

    Example:
        >>> type(make_optimizer("sgd", nn.Linear(2, 2), lr=0.1, momentum=0.9, weight_decay=0.0)).__name__
        'SGD'
    """
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
