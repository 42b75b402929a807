"""The ServerApp's main: build the run from the YAML, find the clients' nodes, run the rounds, report them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from flwr.app import Context
from flwr.serverapp import Grid

from lightning_fl.flower.discovery import discover_clients
from lightning_fl.flower.round_report import RoundLog, RoundReport
from lightning_fl.flower.run_config import read_run_config
from lightning_fl.flower.run_setup import RunSetup, load_run_setup
from lightning_fl.flower.server_round import ServerRuntime

__all__ = ["run_server", "validation_accuracy"]

log = logging.getLogger("lightning_fl.flower")


def run_server(grid: Grid, context: Context) -> list[RoundReport]:
    """Run the federated rounds the run config asks for; returns the rounds' reports (also printed, and written to
    ``metrics-file``). The final global model is saved to ``save-model`` when set.

    Raises:
        FederatedConfigError: At start, if the run config or the YAML asks for something not supported.
    """
    settings = read_run_config(context.run_config)
    setup = load_run_setup(settings.config, settings.num_rounds)
    if setup.left_out:
        log.info("callbacks of %s not used by the Flower apps: %s", setup.config, setup.left_out)
    runtime = ServerRuntime(setup)
    nodes = discover_clients(grid, setup.datamodule.num_clients, settings.connect_timeout)
    round_log = RoundLog(settings.metrics_file)
    for round_idx in range(setup.num_rounds):
        report = runtime.run_round(grid, nodes, round_idx, settings.round_timeout)
        report.val_acc = validation_accuracy(setup, runtime.trainer)
        round_log.write(report)
    if settings.save_model:
        Path(settings.save_model).parent.mkdir(parents=True, exist_ok=True)
        torch.save(setup.model.state_dict(), settings.save_model)
    return round_log.reports


def validation_accuracy(setup: RunSetup, trainer: "pl.Trainer") -> float | None:
    """The module's logged validation accuracy (a metric named ``*acc``) of the model in it on the data module's
    validation split, evaluated by ``trainer``, or ``None`` without a split or such a metric."""
    dm = setup.datamodule
    if dm.val_dataset is None:
        return None
    (metrics,) = trainer.validate(setup.model, dataloaders=dm.val_dataloader(), verbose=False)
    accuracies = sorted(key for key in metrics if key.endswith("acc"))
    return float(metrics[accuracies[0]]) if accuracies else None
