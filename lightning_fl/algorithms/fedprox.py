"""FedProx (Li et al. 2020): a proximal term that keeps each client near the model it started from."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from typing_extensions import override

from lightning_fl.algorithms.cohort_ops import add_to_active, steps_parameters
from lightning_fl.checks import check_non_negative
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.cohort_context import CohortContext


class FedProx(FederatedAlgorithm):
    """Adds the gradient of ``mu / 2 * ||w - w_start||^2``, that is ``mu * (w - w_start)``, to every trainable
    parameter's gradient before each optimizer step, where ``w_start`` is the model the client received.

    The user's module and its loss stay as they are; ``mu = 0`` is exactly FedAvg. Requires a
    :class:`FederatedAveraging` callback in the same Trainer.

    Vectorized mode (``FederatedAveraging(vectorize=...)``): the same term is added per client on the chunk's stacked
    tensors (:meth:`on_before_cohort_step`), to the active slots only, with the same arithmetic, so every client gets
    the gradient it gets in sequential mode.

    Args:
        mu: Proximal coefficient, >= 0 (the FedProx paper uses 0.001 to 1).

    Example:
        >>> FedProx(mu=0.01).mu
        0.01
    """

    supports_submodels = True  # the proximal term works on whatever tensors the client holds
    supports_cohorts = True  # the proximal term on stacked clients: on_before_cohort_step

    def __init__(self, mu: float = 0.01) -> None:
        super().__init__()
        self.mu = check_non_negative("mu", mu)

    @override
    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", optimizer: torch.optim.Optimizer
    ) -> None:
        client = self.context.round.client if self.mu != 0.0 else None
        if client is None or not steps_parameters(optimizer, client.params):
            return  # mu = 0, a padding batch whose effect is discarded, or a cohort step (on_before_cohort_step)
        grads, diffs = _gradients_and_distances(client.params, client.start_weights)
        if grads:
            torch._foreach_add_(grads, diffs, alpha=self.mu)

    @override
    @torch.no_grad()
    def on_before_cohort_step(self, cohort: CohortContext) -> None:
        """Adds ``mu * (w - w_start)`` to every active slot's gradient (an inactive slot's gradient stays zero)."""
        if self.mu == 0.0:
            return
        grads, diffs = _gradients_and_distances(cohort.params, cohort.start_weights)
        add_to_active(grads, diffs, cohort.active, alpha=self.mu, flags=cohort.flags)


def _gradients_and_distances(
    params: list[torch.Tensor], starts: list[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The gradients of the parameters that have one, and their distances ``w - w_start`` (aligned)."""
    with_grad = [(p, s) for p, s in zip(params, starts, strict=True) if p.grad is not None]
    grads: list[torch.Tensor] = [g for p, _ in with_grad if (g := p.grad) is not None]
    if not grads:
        return [], []
    return grads, list(torch._foreach_sub([p for p, _ in with_grad], [s for _, s in with_grad]))
