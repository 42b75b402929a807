"""Personalized evaluation: each client's accuracy on its own held-out data after a little local fine-tuning."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning_fabric.utilities.apply_func import move_data_to_device
from pytorch_lightning.loggers import TensorBoardLogger
from typing_extensions import override

from lightning_fl.checks import check_int, check_positive
from lightning_fl.datamodules.loaders import make_batch_loader
from lightning_fl.datamodules.plan import client_batches
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.algorithm import FederatedAlgorithm, FederatedContext, RoundContext
from lightning_fl.namespaces import both
from lightning_fl.seeding import derive_seed
from lightning_fl.server.aggregator import is_distributed


class PersonalizedEvaluation(FederatedAlgorithm):
    """Every ``every_n_rounds`` rounds (and after the last), each client with a local validation split starts from
    the new global model (with its own personal layers, if any), fine-tunes it for ``finetune_steps`` SGD steps on
    its own training samples, and is scored on its own held-out samples (``local_val_fraction`` of the
    :class:`FederatedDataModule`).

    Logged per evaluated round: ``personal/acc`` (mean over clients, each client counting once) and
    ``personal/acc_min``; with a :class:`~pytorch_lightning.loggers.TensorBoardLogger`, the distribution over clients
    as the histogram ``personal/acc``. The latest per-client accuracies are kept in :attr:`client_accuracy`.

    For classifiers whose ``forward`` returns logits: fine-tuning minimises cross-entropy on ``pl_module(x)`` with a
    fresh SGD optimizer (no momentum) and batches of the data module's ``batch_size`` (a 1-sample batch is skipped,
    as BatchNorm cannot train on it). The evaluation runs on its own random stream and restores the module, its
    gradients and its train/eval mode afterwards, so training is exactly as without it. Clients are spread over
    ranks like their training (``client_id % world_size``); one all-reduce combines the scores.

    Args:
        every_n_rounds: Evaluate after every this many rounds (and after the fit's last round).
        finetune_steps: Local SGD steps before scoring (0: score the global model as it is).
        lr: Fine-tuning learning rate (``None``: the client optimizer's current learning rate).

    Raises:
        FederatedConfigError: On a non-positive ``every_n_rounds``, negative ``finetune_steps`` or ``lr``.

    Example:
        >>> PersonalizedEvaluation(every_n_rounds=5, finetune_steps=3).finetune_steps
        3
    """

    supports_cohorts = True  # evaluates the global model after the round, with its own loop and optimizer

    def __init__(self, every_n_rounds: int = 1, finetune_steps: int = 5, lr: float | None = None) -> None:
        super().__init__()
        self.every_n_rounds = check_int("every_n_rounds", every_n_rounds, low=1)
        self.finetune_steps = check_int("finetune_steps", finetune_steps, low=0)
        self.lr = None if lr is None else check_positive("lr", lr)
        self.client_accuracy: np.ndarray = np.zeros(0)
        self.history: list[dict[str, float]] = []

    @override
    def on_federated_fit_start(self, context: FederatedContext) -> None:
        super().on_federated_fit_start(context)
        dm = context.datamodule
        if dm.local_val_fraction <= 0:
            raise FederatedConfigError(
                "PersonalizedEvaluation needs held-out samples on every client: FederatedDataModule("
                f"local_val_fraction=...) must be > 0, got {dm.local_val_fraction}"
            )

    @override
    def on_round_end(self, trainer: "pl.Trainer", round_context: RoundContext) -> dict[str, float]:
        if (round_context.round_idx + 1) % self.every_n_rounds and not round_context.is_last:
            return {}
        lr = self.lr if self.lr is not None else float(trainer.optimizers[0].param_groups[0]["lr"])
        acc = self.evaluate(trainer.lightning_module, round_context.round_idx, lr)
        scored = acc[~np.isnan(acc)]
        if scored.size == 0:
            return {}
        metrics = {"personal/acc": float(scored.mean()), "personal/acc_min": float(scored.min())}
        self.client_accuracy = acc
        self.history.append({"round": float(round_context.round_idx), **metrics})
        for logger in trainer.loggers:
            if isinstance(logger, both(TensorBoardLogger)) and trainer.is_global_zero:
                logger.experiment.add_histogram("personal/acc", scored, global_step=round_context.round_idx)
        return metrics

    def evaluate(self, pl_module: "pl.LightningModule", round_idx: int, lr: float) -> np.ndarray:
        """Every client's personalized accuracy (``nan`` for a client without held-out samples), on every rank.

        The module must hold the global model; it holds it again afterwards.
        """
        context = self.context
        dm = context.datamodule
        num_clients = dm.num_clients
        correct = torch.zeros(num_clients, dtype=torch.float64)
        total = torch.zeros(num_clients, dtype=torch.float64)
        params = [p for p in pl_module.parameters() if p.requires_grad]
        grads = [p.grad for p in params]
        was_training = pl_module.training
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            for client_id in range(context.rank, num_clients, context.world_size):
                if len(dm.client_val_indices[client_id]) == 0:
                    continue
                seed = derive_seed(context.seed, "personal_eval", round_idx, client_id)
                torch.default_generator.manual_seed(seed)
                if devices:
                    torch.cuda.manual_seed(seed)
                context.state.write_module()
                context.load_client_tensors(client_id)
                self._finetune(pl_module, client_id, round_idx, lr, params)
                correct[client_id], total[client_id] = _score(pl_module, dm.client_dataloader(client_id, "val"))
        context.state.write_module()
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        pl_module.train(was_training)
        if is_distributed():
            both = torch.stack([correct, total]).to(context.state.device)
            dist.all_reduce(both)
            correct, total = both.cpu()
        acc = torch.where(total > 0, correct / total.clamp(min=1), torch.full_like(total, float("nan")))
        return acc.numpy()

    def _finetune(
        self, pl_module: "pl.LightningModule", client_id: int, round_idx: int, lr: float, params: list[Any]
    ) -> None:
        if self.finetune_steps == 0:
            return
        dm = self.context.datamodule
        indices = dm.client_indices[client_id]
        epochs = -(-self.finetune_steps * dm.batch_size // len(indices)) + 1
        batches = client_batches(indices, dm.batch_size, epochs, True, self.context.seed, round_idx, client_id)
        batches = [b for b in batches if len(b) > 1][: self.finetune_steps]
        assert dm.train_dataset is not None
        optimizer = torch.optim.SGD(params, lr=lr)
        pl_module.train()
        for batch in make_batch_loader(dm.train_dataset, batches, collate_fn=dm.collate_fn):
            x, y = move_data_to_device(batch, pl_module.device)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(pl_module(x), y).backward()
            optimizer.step()


@torch.no_grad()
def _score(pl_module: "pl.LightningModule", loader: Any) -> tuple[float, float]:
    """Correct predictions and samples of ``pl_module`` (in eval mode) over ``loader``."""
    pl_module.eval()
    correct = total = 0
    for batch in loader:
        x, y = move_data_to_device(batch, pl_module.device)
        correct += int((pl_module(x).argmax(-1) == y).sum())
        total += len(y)
    return float(correct), float(total)
