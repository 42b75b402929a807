"""FedProx (Li et al. 2020): a proximal term that keeps each client near the model it started from."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from typing_extensions import override

from lightning_fl.checks import check_non_negative
from lightning_fl.federation.algorithm import FederatedAlgorithm


class FedProx(FederatedAlgorithm):
    """Adds the gradient of ``mu / 2 * ||w - w_start||^2``, that is ``mu * (w - w_start)``, to every trainable
    parameter's gradient before each optimizer step, where ``w_start`` is the model the client received.

    The user's module and its loss stay as they are; ``mu = 0`` is exactly FedAvg. Requires a
    :class:`FederatedAveraging` callback in the same Trainer.

    Args:
        mu: Proximal coefficient, >= 0 (the FedProx paper uses 0.001 to 1).

    Example:
        >>> FedProx(mu=0.01).mu
        0.01
    """

    supports_submodels = True  # the proximal term works on whatever tensors the client holds

    def __init__(self, mu: float = 0.01) -> None:
        super().__init__()
        self.mu = check_non_negative("mu", mu)

    @override
    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", optimizer: torch.optim.Optimizer
    ) -> None:
        client = self.context.round.client if self.mu != 0.0 else None
        if client is None:
            return  # mu = 0, or a padding batch whose effect is discarded
        with_grad = [(p, s) for p, s in zip(client.params, client.start_weights, strict=True) if p.grad is not None]
        if not with_grad:
            return
        grads: list[torch.Tensor] = [g for p, _ in with_grad if (g := p.grad) is not None]
        diffs = torch._foreach_sub([p for p, _ in with_grad], [s for _, s in with_grad])
        torch._foreach_add_(grads, diffs, alpha=self.mu)
