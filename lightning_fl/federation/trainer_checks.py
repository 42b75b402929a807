"""Trainer settings that federated training needs, checked before any training starts."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.strategies import SingleDeviceStrategy

from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.callback_checks import check_callbacks
from lightning_fl.federation.fast_dev_run import adapt_fast_dev_run
from lightning_fl.namespaces import both
from lightning_fl.strategies import FEDERATED_STRATEGIES


def check_trainer(trainer: "pl.Trainer") -> None:
    """Raise :class:`FederatedConfigError` for a Trainer that would silently train the wrong thing.

    One epoch is one round, so the loader must be rebuilt every epoch, no sampler may reorder clients, no
    gradient may be accumulated or averaged across clients, and nothing may cut or checkpoint a round in the
    middle. ``Trainer(fast_dev_run=n)`` is first turned into one round of ``n`` batches per client
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
    reload_every = trainer.reload_dataloaders_every_n_epochs  # type: ignore[attr-defined]
    if reload_every != 1:
        raise FederatedConfigError(
            "Trainer(reload_dataloaders_every_n_epochs=1) is required (every epoch is a new round with new "
            f"clients), got {reload_every}"
        )
    if trainer._accelerator_connector.use_distributed_sampler:
        raise FederatedConfigError(
            "Trainer(use_distributed_sampler=False) is required (the FederatedDataModule spreads clients over "
            "ranks itself; a DistributedSampler would reorder and mix clients), got use_distributed_sampler=True"
        )
    if trainer.accumulate_grad_batches != 1:
        raise FederatedConfigError(
            "accumulate_grad_batches must be 1 (accumulation would mix two clients' gradients across a client "
            f"boundary), got {trainer.accumulate_grad_batches}"
        )
    if trainer.limit_train_batches not in (1.0, None):
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
