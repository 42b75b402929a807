"""Trainer settings that federated training needs: set where Lightning's default does not fit, refused where the
user chose something that conflicts, before any training starts. No federated flag is required."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.strategies import SingleDeviceStrategy

from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.callback_checks import check_callbacks
from lightning_fl.federation.fast_dev_run import adapt_fast_dev_run
from lightning_fl.namespaces import both
from lightning_fl.strategies import FEDERATED_STRATEGIES

__all__ = ["check_trainer", "prepare_trainer"]


def prepare_trainer(trainer: "pl.Trainer") -> None:
    """Make a plain ``pl.Trainer`` fit for federated rounds, or raise :class:`FederatedConfigError` for one that
    would silently train the wrong thing.

    One epoch is one round, so the loader must be rebuilt every epoch: ``reload_dataloaders_every_n_epochs`` left at
    its default 0 is set to 1 (a public Trainer attribute, read by the fit loop after the setup hooks), any other
    value but 1 is refused. ``use_distributed_sampler`` needs no check: the data module's loaders are not
    ``DataLoader`` objects, so Lightning injects no sampler into them. No gradient may be accumulated or averaged
    across clients, and nothing may cut or checkpoint a round in the middle. ``Trainer(fast_dev_run=n)`` is first
    turned into one round of ``n`` batches per client
    (:func:`~lightning_fl.federation.fast_dev_run.adapt_fast_dev_run`).
    """
    from lightning_fl.datamodules.federated import FederatedDataModule

    adapt_fast_dev_run(trainer)
    datamodule = trainer.datamodule  # type: ignore[attr-defined]
    if not isinstance(datamodule, FederatedDataModule):
        got = type(datamodule).__name__ if datamodule is not None else "no datamodule"
        raise FederatedConfigError(
            f"datamodule must be a lightning_fl FederatedDataModule (trainer.fit(model, datamodule=dm)), got {got}"
        )
    _set_reload_every_round(trainer)
    if trainer.accumulate_grad_batches != 1:
        raise FederatedConfigError(
            "accumulate_grad_batches must be 1 (accumulation would mix two clients' gradients across a client "
            f"boundary), got {trainer.accumulate_grad_batches}"
        )
    limit = trainer.limit_train_batches
    # the integer 1 equals 1.0 but means "one batch per round" to Lightning: only the float 1.0 (or None) is whole
    if limit is not None and (isinstance(limit, (bool, int)) or limit != 1.0):
        raise FederatedConfigError(
            f"limit_train_batches must be 1.0 (a cut round never aggregates), got {trainer.limit_train_batches}"
        )
    check_callbacks(trainer)
    vci = trainer.val_check_interval
    if isinstance(vci, int) or vci != 1.0:
        raise FederatedConfigError(
            "val_check_interval must be 1.0 (validation in the middle of a round would evaluate a client's "
            f"weights; use check_val_every_n_epoch to validate every k rounds), got {vci}"
        )
    if trainer.max_steps not in (-1, None):
        raise FederatedConfigError(
            f"max_steps must be -1 (a round cut by max_steps never aggregates; set max_epochs = rounds), "
            f"got {trainer.max_steps}"
        )
    _check_strategy(trainer)
    _check_checkpointing(trainer)


#: The former name, for old code.
check_trainer = prepare_trainer


def _set_reload_every_round(trainer: "pl.Trainer") -> None:
    reload_every = trainer.reload_dataloaders_every_n_epochs  # type: ignore[attr-defined]
    if reload_every == 0:
        trainer.reload_dataloaders_every_n_epochs = 1  # type: ignore[attr-defined]
    elif reload_every != 1:
        raise FederatedConfigError(
            "reload_dataloaders_every_n_epochs must be 1 (every epoch is a new round with new clients; "
            f"lightning-fl sets it when left at 0), got {reload_every}"
        )


def _check_strategy(trainer: "pl.Trainer") -> None:
    strategy = trainer.strategy
    if isinstance(strategy, (*both(SingleDeviceStrategy), *FEDERATED_STRATEGIES)):
        return
    raise FederatedConfigError(
        f"strategy must be single-device or lightning_fl's FederatedDDPStrategy (strategy='federated_ddp'), got "
        f"{type(strategy).__name__}: it would average gradients across clients. For several devices pass "
        "Trainer(strategy=FederatedDDPStrategy(), devices=N) or strategy='federated_ddp'"
    )


def _check_checkpointing(trainer: "pl.Trainer") -> None:
    model_checkpoint = both(ModelCheckpoint)
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, model_checkpoint) and (cb._every_n_train_steps or cb._train_time_interval is not None):
            raise FederatedConfigError(
                "ModelCheckpoint(every_n_train_steps=..., train_time_interval=...) would checkpoint in the middle "
                "of a round, capturing a client's weights instead of the global model; use every_n_epochs "
                f"(one epoch = one round), got every_n_train_steps={cb._every_n_train_steps}, "
                f"train_time_interval={cb._train_time_interval}"
            )
