"""The server step of a round, refused when it would leave a non-finite global model.

Client updates are checked one by one (by the client before its algorithms change the update, and by the server on
what it decodes), but finite updates can still sum to Inf, and a server optimizer can overflow (``lr=inf``, a huge
momentum). :class:`GuardedServerStep` checks the aggregate before the step and the global model after it; when either
holds NaN or Inf the round is refused: the global model, its integer buffers and the server optimizer's state are
left exactly as they were before the round.
"""

from __future__ import annotations

import warnings

import torch
from pytorch_lightning.utilities import rank_zero_info

from lightning_fl.federation.flat import FlatState
from lightning_fl.server.optimizers import ServerOptimizer


class GuardedServerStep:
    """Applies a round's mean update to the global state, or refuses it and restores the state before the round.

    The global vector and the optimizer state are copied into buffers allocated once (one copy of the model and of
    the optimizer's state per round: small next to a round's training).

    Args:
        state: The global model as flat tensors.
        optimizer: The server optimizer.

    Example:
        >>> from torch import nn
        >>> from lightning_fl.server.optimizers import ServerSGD
        >>> state = FlatState(nn.Linear(2, 1), torch.device("cpu"))
        >>> before = state.flat.clone()
        >>> GuardedServerStep(state, ServerSGD(lr=1.0)).step(torch.full_like(state.flat, float("inf")), None)
        'the aggregated update'
        >>> torch.equal(state.flat, before)
        True
    """

    def __init__(self, state: FlatState, optimizer: ServerOptimizer) -> None:
        self.state = state
        self.optimizer = optimizer
        self._flat_backup = torch.empty_like(state.flat)
        self._optimizer_backup: dict[str, torch.Tensor] = {}
        self._steps_backup = 0
        self._warned = False

    @torch.no_grad()
    def step(self, mean: torch.Tensor, int_increments: torch.Tensor | None) -> str | None:
        """Step the server optimizer with ``mean`` and add ``int_increments`` to the integer buffers.

        Returns:
            ``None`` when the round was applied; otherwise what was not finite (``"the aggregated update"`` or
            ``"the global model after the server step"``), with the global state and optimizer unchanged.
        """
        # one reduction each instead of an elementwise isfinite (30x cheaper): NaN and Inf make the sum non-finite, and
        # so would finite entries summing past float32's range, which no trainable model or update has
        if not bool(torch.isfinite(mean.sum())):
            return "the aggregated update"
        state = self.state
        self._snapshot()
        p = state.num_param_elements
        self.optimizer.step(state.flat[:p], mean[:p])
        state.flat[p:].add_(mean[p:])
        if not bool(torch.isfinite(state.flat.sum())):
            self._restore()
            return "the global model after the server step"
        if int_increments is not None:
            state.int_flat.add_(int_increments)
        return None

    def warn_refused(self, round_idx: int, reason: str) -> None:
        """Say why round ``round_idx`` was refused (``reason``: what :meth:`step` returned): a ``RuntimeWarning``
        the first time in a fit, with what to do, an info line afterwards."""
        message = (
            f"round {round_idx} was refused: {reason} contains NaN or Inf, so the global model and the server "
            "optimizer are kept as they were before the round"
        )
        if self._warned:
            rank_zero_info(message)
            return
        self._warned = True
        warnings.warn(
            f"{message}; refused rounds are counted in fl/rejected_rounds (lower the server lr, or use a robust "
            "aggregator against huge updates)",
            RuntimeWarning,
            stacklevel=3,
        )

    def _snapshot(self) -> None:
        self._flat_backup.copy_(self.state.flat)
        backup = {}
        for name, tensor in self.optimizer.state.items():
            kept = self._optimizer_backup.get(name)
            if kept is None or kept.shape != tensor.shape or kept.device != tensor.device or kept.dtype != tensor.dtype:
                kept = torch.empty_like(tensor)
            backup[name] = kept.copy_(tensor)
        self._optimizer_backup = backup
        self._steps_backup = self.optimizer.steps

    def _restore(self) -> None:
        self.state.flat.copy_(self._flat_backup)
        # buffers the failed step created are dropped; the others get their values back (in place, so that views
        # held elsewhere stay valid)
        for name in list(self.optimizer.state):
            if name not in self._optimizer_backup:
                del self.optimizer.state[name]
        for name, kept in self._optimizer_backup.items():
            self.optimizer.state[name].copy_(kept)
        self.optimizer.steps = self._steps_backup

