"""What a Flower run is built from: the same YAML ``lightning-fl fit --config`` takes, read by the same parser.

The model, the data module and the :class:`~lightning_fl.federation.host.FederatedAveraging` callback (codecs,
policy, aggregator, server optimizer, seed) come from :class:`~lightning_fl.cli.FederatedCLI` exactly as
``lightning-fl fit`` builds them (``seed_everything`` first, so the server starts from the same initial model).
Lightning callbacks that only make sense around a simulated fit (checkpoints, progress bars, loggers) are left out;
anything a Flower run cannot reproduce is refused here, at app start, naming it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from lightning_fl.cli import FederatedCLI
from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.host import FederatedAveraging
from lightning_fl.flower.algorithms import check_supported

__all__ = ["RunSetup", "load_run_setup"]

#: Trainer arguments of the YAML that a client's Trainer takes over (the rest concern the simulated fit).
CLIENT_TRAINER_KEYS = ("accelerator", "precision", "gradient_clip_val", "gradient_clip_algorithm", "deterministic")


@dataclass
class RunSetup:
    """The pieces of one YAML config a Flower app needs.

    Attributes:
        config: The YAML's path.
        model: The LightningModule, initialised as ``lightning-fl fit`` initialises it.
        datamodule: The data module, set up (``setup("fit")``): partition, client sizes, validation split.
        averaging: The YAML's server callback (codecs, policy, aggregator, server optimizer).
        seed: The federated seed (``FederatedAveraging(seed=...)``, else the data module's).
        num_rounds: Rounds to run (the run config's ``num-rounds``, else the YAML's ``trainer.max_epochs``).
        client_trainer: Keyword arguments of each client's Lightning ``Trainer`` taken from the YAML.
        algorithms: The YAML's algorithm callbacks (supported ones only: checked at load).
        left_out: Names of the YAML's callbacks that a Flower run does not use.
    """

    config: str
    model: pl.LightningModule
    datamodule: FederatedDataModule
    averaging: FederatedAveraging
    seed: int
    num_rounds: int
    client_trainer: dict[str, Any] = field(default_factory=dict)
    algorithms: list[FederatedAlgorithm] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def load_run_setup(config: object, num_rounds: object = None) -> RunSetup:
    """Build the run's pieces from the YAML at ``config`` and refuse what a Flower run does not support.

    Args:
        config: Path of a ``lightning-fl fit`` YAML config.
        num_rounds: Rounds to run (a positive int); ``None`` takes the YAML's ``trainer.max_epochs``.

    Raises:
        FederatedConfigError: If the path is not a readable file, ``num_rounds`` is not a positive int, or the
            config uses something a Flower run cannot reproduce (named in the message).
    """
    if not isinstance(config, str) or not Path(config).is_file():
        raise FederatedConfigError(f"run config 'config' must be the path of a lightning-fl YAML file, got {config!r}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        cli = FederatedCLI(args=["--config", config], run=False)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    if not isinstance(dm, FederatedDataModule):
        raise FederatedConfigError(f"the config's data must be a FederatedDataModule, got {type(dm).__name__}")
    averaging = _refuse_unsupported(trainer, model)
    rounds = trainer.max_epochs if num_rounds is None else num_rounds
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise FederatedConfigError(f"num-rounds must be a positive int (or trainer.max_epochs in {config}), "
                                   f"got {rounds!r}")
    dm.setup("fit")
    client_trainer = {key: cli.config.get(f"trainer.{key}") for key in CLIENT_TRAINER_KEYS}
    client_trainer = {key: value for key, value in client_trainer.items() if value is not None}
    configured = list(cli.config_init.get("trainer.callbacks") or [])
    algorithms = [cb for cb in configured if isinstance(cb, FederatedAlgorithm)]
    left_out = [type(cb).__name__ for cb in configured if cb is not averaging and cb not in algorithms]
    seed = dm.seed if averaging.seed is None else averaging.seed
    return RunSetup(config, model, dm, averaging, seed, rounds, client_trainer, algorithms, left_out)


def _refuse_unsupported(trainer: pl.Trainer, model: pl.LightningModule) -> FederatedAveraging:
    """The config's :class:`FederatedAveraging`, after refusing what a Flower run cannot do the same way."""
    if getattr(model, "uses_weight_averaging", True) is False:
        raise FederatedConfigError(f"{type(model).__name__} runs its own rounds (uses_weight_averaging=False); the "
                                   "Flower apps run weight averaging only")
    callbacks = list(trainer.callbacks)  # type: ignore[attr-defined]
    check_supported([cb for cb in callbacks if isinstance(cb, FederatedAlgorithm)])
    found = [cb for cb in callbacks if isinstance(cb, FederatedAveraging)]
    if len(found) != 1:
        raise FederatedConfigError(f"the config must have exactly one FederatedAveraging callback, got {len(found)}")
    if trainer.num_devices != 1:
        raise FederatedConfigError(f"a Flower client trains on one device; trainer.devices must be 1, got "
                                   f"{trainer.num_devices}")
    if trainer.accumulate_grad_batches != 1:
        raise FederatedConfigError("trainer.accumulate_grad_batches must be 1 in a Flower run, got "
                                   f"{trainer.accumulate_grad_batches}")
    _refuse_schedulers(model)
    return found[0]


def _refuse_schedulers(model: pl.LightningModule) -> None:
    """A learning-rate scheduler steps across rounds in ``lightning-fl fit``; each Flower client builds its
    optimizer afresh every round, so the schedule would restart: refuse it."""
    configured = model.configure_optimizers()
    if isinstance(configured, (list, tuple)) and len(configured) == 1:
        configured = configured[0]
    if isinstance(configured, torch.optim.Optimizer):
        return
    raise FederatedConfigError(f"{type(model).__name__}.configure_optimizers must return one optimizer without a "
                               f"learning-rate scheduler in a Flower run, got {type(configured).__name__}")
