"""A ready-made LightningModule for classification, so configs need no user code."""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_fl.checks import check_bool, check_choice, check_float, check_int, check_non_negative
from lightning_fl.nn.models import MLP


class ClassifierModule(pl.LightningModule):
    """Any backbone, cross-entropy loss, SGD or Adam; logs ``train/loss``, ``val/loss``, ``val/acc``,
    ``test/loss`` and ``test/acc``.

    This is an ordinary LightningModule: nothing in it knows about federated learning.

    Args:
        backbone: The network (default: ``MLP(64, [128], 10)`` for the digits).
        num_classes: Classes, for the accuracy metric.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: Learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        log_train_loss: Log the training loss every ``log_every_n_steps`` (``False`` skips the per-step call).

    Example:
        >>> m = ClassifierModule(num_classes=10)
        >>> m(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        num_classes: int = 10,
        optimizer: Literal["sgd", "adam"] = "sgd",
        lr: float = 0.05,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        log_train_loss: bool = True,
    ) -> None:
        super().__init__()
        check_choice("optimizer", optimizer, ("sgd", "adam"))
        check_float("lr", lr, low=0, low_open=True)
        check_float("momentum", momentum, 0, 1, high_open=True)
        check_non_negative("weight_decay", weight_decay)
        check_int("num_classes", num_classes, low=2)
        check_bool("log_train_loss", log_train_loss)
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone if backbone is not None else MLP(64, [128], num_classes)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        if self.hparams["log_train_loss"]:
            self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def _evaluate(self, batch: Any, stage: str, metric: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self(x)
        metric.update(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True, batch_size=len(y))
        self.log(f"{stage}/acc", metric, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        if hp["optimizer"] == "adam":
            return torch.optim.Adam(self.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        return torch.optim.SGD(
            self.parameters(), lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
        )
