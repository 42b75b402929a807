"""A simulation switch that makes a fixed fraction of the clients malicious, so robust aggregation can be measured."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from typing_extensions import override

from lightning_fl.checks import check_choice, check_fraction, check_int, check_positive
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.algorithm import ClientContext, FederatedAlgorithm, FederatedContext
from lightning_fl.seeding import derive_seed

Attack = Literal["sign_flip", "scale", "label_flip"]
ATTACKS = ("sign_flip", "scale", "label_flip")


class MaliciousClients(FederatedAlgorithm):
    """Turns ``round(fraction * num_clients)`` clients, chosen once from ``seed``, into attackers.

    Attacks:

    - ``"sign_flip"``: the client sends ``-scale * update`` (Byzantine sign flipping; ``scale=4`` as in the
      robust-aggregation literature's default experiments).
    - ``"scale"``: the client sends ``scale * update`` (model boosting).
    - ``"label_flip"``: the client trains on labels ``num_classes - 1 - y`` and sends its update as is (data
      poisoning).

    Update attacks act before differential-privacy clipping (``order`` 10) and after algorithms that read the honest
    update (SCAFFOLD). The chosen clients are in :attr:`clients` after fit start.

    Args:
        fraction: Fraction of all clients that are malicious, in [0, 1].
        attack: ``"sign_flip"``, ``"scale"`` or ``"label_flip"``.
        scale: Factor of the update attacks, > 0.
        num_classes: Classes, for label flipping (``None``: ``max(label) + 1`` of the training set).
        seed: Seed of the choice (``None``: the federated seed).

    Raises:
        FederatedConfigError: On an argument outside its range.

    Example:
        >>> MaliciousClients(fraction=0.2, attack="scale", scale=10.0).scale
        10.0
    """

    order = 10
    supports_submodels = True  # scales the update or flips labels, whatever tensors the client holds
    # The update attacks act in on_client_update, per client. label_flip acts on each client's batches, which a
    # vectorized step does not give one client at a time: an instance with it says so (refused at fit start).
    supports_cohorts = True

    def __init__(
        self,
        fraction: float = 0.2,
        attack: Attack = "sign_flip",
        scale: float = 4.0,
        num_classes: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.fraction = check_fraction("fraction", fraction)
        self.attack: Attack = check_choice("attack", attack, ATTACKS)
        self.scale = check_positive("scale", scale)
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes, low=2)
        self.seed = None if seed is None else check_int("seed", seed, low=0)
        self.clients: frozenset[int] = frozenset()
        if self.attack == "label_flip":
            self.supports_cohorts = False

    @override
    def on_federated_fit_start(self, context: FederatedContext) -> None:
        super().on_federated_fit_start(context)
        n = context.datamodule.num_clients
        seed = context.seed if self.seed is None else self.seed
        rng = np.random.default_rng(derive_seed(seed, "malicious"))
        chosen = rng.choice(n, size=round(self.fraction * n), replace=False)
        self.clients = frozenset(int(c) for c in chosen)
        if self.attack == "label_flip" and self.num_classes is None:
            labels = context.datamodule.train_labels("MaliciousClients(attack='label_flip') without num_classes")
            self._num_classes = int(labels.max()) + 1
        else:
            self._num_classes = self.num_classes or 0

    @override
    @torch.no_grad()
    def on_client_update(self, client: ClientContext, update: torch.Tensor, views: list[torch.Tensor]) -> None:
        if self.attack != "label_flip" and client.client_id in self.clients:
            update.mul_(-self.scale if self.attack == "sign_flip" else self.scale)

    @override
    def on_train_batch_start(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any, batch_idx: int
    ) -> None:
        if self.attack != "label_flip" or self.context.round.client_of(batch_idx) not in self.clients:
            return
        if not isinstance(batch, (tuple, list)) or len(batch) < 2 or not isinstance(batch[1], torch.Tensor):
            raise FederatedConfigError(
                f"label_flip needs batches (x, y, ...) with integer labels y, got {type(batch).__name__}"
            )
        labels = batch[1]
        labels.copy_(self._num_classes - 1 - labels)
