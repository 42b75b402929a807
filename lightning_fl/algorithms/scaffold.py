"""SCAFFOLD (Karimireddy et al. 2020): control variates that correct each client's drift towards its own optimum."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from typing_extensions import override

from lightning_fl.algorithms.cohort_ops import add_to_active, steps_parameters
from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError
from lightning_fl.federation.algorithm import ClientContext, FederatedAlgorithm, FederatedContext, RoundContext
from lightning_fl.federation.client_store import ClientStore
from lightning_fl.federation.cohort_context import CohortContext
from lightning_fl.federation.flat import TensorSpec


class Scaffold(FederatedAlgorithm):
    """SCAFFOLD with option II control variates, on top of :class:`FederatedAveraging`, for any client optimizer.

    Every local step's gradient gets ``c - c_i`` added before the optimizer steps (server variate ``c``, the
    client's ``c_i``, both zero at first). After the client's ``K`` local steps, ``c_i+`` is the mean of the
    client's own (uncorrected) minibatch gradients along its trajectory, weighted by the learning rate of each step:
    ``c_i+ = sum_k lr_k g_k / sum_k lr_k``. For plain SGD this is exactly the paper's option II,
    ``c_i+ = c_i - c + (x - y_i) / (K * lr)``; unlike that formula it does not assume plain SGD steps, so SGD with
    momentum or Nesterov, Adam/AdamW, weight decay and gradient clipping (which move ``y_i`` differently from
    ``K * lr`` times the mean gradient) give correct variates too. The server then moves
    ``c += (|S| / N) * mean_{i in S}(c_i+ - c_i)`` (its sum travels in the round's one all-reduce), while
    :class:`FederatedAveraging` applies the mean model update through its server optimizer (its sample-count
    weights; the paper's clients are equally sized). Variates cover the trainable parameters only.

    Memory: ``c`` and four work vectors are ``P`` float32 values each on the module's device; each client's ``c_i`` is
    ``P`` float32 values on CPU, ``4 * P`` bytes per client (``P`` trainable parameters: 24.7 KB for the digits
    ``SmallCNN(16, 32)``, 45 MB for a ResNet-18), kept in a :class:`~lightning_fl.federation.client_store.ClientStore`
    that ``max_clients`` bounds (least recently used clients restart from zero). With several processes clients are
    pinned to rank ``client_id % world_size``, each rank keeps its own clients' variates, and checkpoints merge them
    by owner.

    The client optimizer must have one learning rate for all its parameter groups (the weights of the mean).

    Vectorized mode (``FederatedAveraging(vectorize=...)``, a chunk of ``K`` clients trained at once): every client's
    ``c_i`` is loaded at its start and kept by client, the chunk's corrections ``c - c_i`` and running sums of raw
    gradients are stacked ``[K, P]`` (slot ``k`` is client ``k``'s; active slots only), and a client's ``c_i+`` is
    read from its own slot at its update: each client gets exactly what sequential mode gives it. This takes three
    ``[K, P]`` tensors on the module's device for the chunk's duration.

    Args:
        max_clients: Keep the variates of at most this many clients per process (``None``: all).

    Example:
        >>> Scaffold(max_clients=1000).client_controls.max_clients
        1000
    """

    keeps_client_state = True
    supports_cohorts = True  # the correction and the running sums per slot: on_before_cohort_step

    def __init__(self, max_clients: int | None = None) -> None:
        super().__init__()
        self.client_controls: ClientStore[torch.Tensor] = ClientStore(max_clients)
        self.server_control: torch.Tensor | None = None
        self._loaded_server_control: torch.Tensor | None = None
        self._lr_sum = 0.0
        self._optimizer: torch.optim.Optimizer | None = None
        #: Clients started and not yet updated: the variate each started from (``None``: zero), by client.
        self._started: dict[int, torch.Tensor | None] = {}
        #: Vectorized mode: the running sums of the chunks in training, by their clients (in slot order).
        self._cohorts: dict[tuple[int, ...], _CohortSums] = {}

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if len(trainer.optimizers) != 1:
            raise FederatedConfigError(f"Scaffold needs exactly one client optimizer, got {len(trainer.optimizers)}")
        self._optimizer = trainer.optimizers[0]  # its learning rate weighs the gradients of cohort steps

    @override
    def on_federated_fit_start(self, context: FederatedContext) -> None:
        super().on_federated_fit_start(context)
        self._started.clear()  # an abandoned round of an earlier fit ends without on_round_end
        self._cohorts.clear()
        state = context.state
        p = state.num_param_elements
        loaded = self._loaded_server_control
        if loaded is not None and loaded.numel() != p:
            raise FederatedConfigError(
                f"the checkpoint's server_control must have {p} values (the model's trainable parameters), "
                f"got {loaded.numel()}"
            )
        zeros = torch.zeros(p, dtype=state.dtype, device=state.device)
        self.server_control = loaded.to(zeros) if loaded is not None else zeros
        self._loaded_server_control = None
        self._client_control = torch.zeros_like(self.server_control)
        self._correction = torch.zeros_like(self.server_control)
        self._grad_sum = torch.zeros_like(self.server_control)
        # sum of (c_i+ - c_i) over the round's clients: summed over ranks in the round's one all-reduce
        self._delta_sum = context.sum_state("scaffold_control_delta", p, state.dtype)
        self._specs = specs = [s for s in state.float_specs if s.is_parameter]
        self._params = state.module_float[: len(specs)]
        self._correction_views = [self._correction[s.offset : s.offset + s.numel].view(s.shape) for s in specs]
        self._grad_sum_views = [self._grad_sum[s.offset : s.offset + s.numel].view(s.shape) for s in specs]
        if context.world_size > 1:
            self.client_controls.keep_owned(context.rank, context.world_size)

    @override
    @torch.no_grad()
    def on_client_start(self, client: ClientContext) -> None:
        assert self.server_control is not None
        stored = self.client_controls.get(client.client_id)
        self._started[client.client_id] = stored  # kept by client: a cohort's clients all start before its steps
        if stored is None:
            self._client_control.zero_()
        else:
            self._client_control.copy_(stored)
        torch.sub(self.server_control, self._client_control, out=self._correction)
        self._grad_sum.zero_()
        self._lr_sum = 0.0

    @override
    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", optimizer: torch.optim.Optimizer
    ) -> None:
        if self.context.round.client is None or not steps_parameters(optimizer, self._params):
            return  # a padding batch, whose effect is discarded, or a cohort step (on_before_cohort_step)
        lr = _one_lr(optimizer)
        self._lr_sum += lr
        found = [
            (p.grad, c, s)
            for p, c, s in zip(self._params, self._correction_views, self._grad_sum_views, strict=True)
            if p.grad is not None
        ]
        if found:
            grads = [g for g, _, _ in found]
            torch._foreach_add_([s for _, _, s in found], grads, alpha=lr)  # the raw gradient, for c_i+
            torch._foreach_add_(grads, [c for _, c, _ in found])

    @override
    @torch.no_grad()
    def on_before_cohort_step(self, cohort: CohortContext) -> None:
        """Per active slot: the raw gradient into the slot's running sum (weighted by the step's learning rate),
        then ``c - c_i`` of the slot's client added to it."""
        if not cohort.clients:
            return
        if self._optimizer is None:
            raise FederatedRuntimeError("Scaffold got a cohort step before fit start")
        sums = self._cohort_sums(cohort)
        lr = _one_lr(self._optimizer)
        flags = cohort.flags
        for slot, active in enumerate(flags):
            if active:
                sums.lr_sums[slot] += lr
        found = [(p.grad, c, s) for p, c, s in zip(cohort.params, sums.correction_views, sums.grad_sum_views,
                                                     strict=True) if p.grad is not None]
        if found:
            grads = [g for g, _, _ in found]
            add_to_active([s for _, _, s in found], grads, cohort.active, alpha=lr,  # the raw gradient, for c_i+
                          flags=flags)
            add_to_active(grads, [c for _, c, _ in found], cohort.active, flags=flags)

    def _cohort_sums(self, cohort: CohortContext) -> _CohortSums:
        """The running sums of the cohort's clients: new at a chunk's first step (its clients have all started)."""
        ids = tuple(cohort.client_ids)
        started = [c in self._started for c in ids]
        if all(started):
            assert self.server_control is not None
            controls = [self._started.pop(c) for c in ids]
            self._cohorts[ids] = _CohortSums.start(list(ids), controls, self.server_control, self._specs)
        elif any(started) or ids not in self._cohorts:
            raise FederatedRuntimeError(
                f"Scaffold got a cohort step for clients {list(ids)}, but only "
                f"{[c for c in ids if c in self._started]} started (on_client_start); chunks in training: "
                f"{[list(k) for k in self._cohorts]}"
            )
        return self._cohorts[ids]

    @override
    @torch.no_grad()
    def on_client_update(self, client: ClientContext, update: torch.Tensor, views: list[torch.Tensor]) -> None:
        key = next((k for k, sums in self._cohorts.items() if client.client_id in sums.slots), None)
        if key is None:  # sequential mode (or a client that took no cohort step: its sums are zero)
            self._started.pop(client.client_id, None)
            self._finish_client(client.client_id, self._grad_sum, self._lr_sum, self._client_control)
            return
        cohort = self._cohorts[key]
        slot = cohort.slots.pop(client.client_id)
        self._finish_client(client.client_id, cohort.grad_sums[slot], cohort.lr_sums[slot], cohort.controls[slot])
        if not cohort.slots:
            del self._cohorts[key]  # the chunk's clients are all done: free its sums

    def _finish_client(self, client_id: int, grad_sum: torch.Tensor, lr_sum: float, control: torch.Tensor) -> None:
        """``c_i+``, the lr-weighted mean of the client's raw gradients, into the store and the round's delta sum
        (``control``: the ``c_i`` it started from)."""
        if lr_sum <= 0.0:
            return  # no local step: c_i stays
        new = grad_sum / lr_sum
        self._delta_sum.add_(new).sub_(control)
        self.client_controls.put(client_id, new.to("cpu"))

    @override
    @torch.no_grad()
    def on_round_end(self, trainer: "pl.Trainer", round_context: RoundContext) -> dict[str, float]:
        assert self.server_control is not None
        self._started.clear()  # clients whose update was rejected (not finite) never reached on_client_update
        self._cohorts.clear()
        if not round_context.refused:  # a refused round keeps the server's state, its control variate included
            # c += |S|/N * mean(delta c_i) = sum(delta c_i) / N (the sum was reduced in the round's all-reduce)
            self.server_control.add_(self._delta_sum, alpha=1.0 / self.context.datamodule.num_clients)
        return {}

    @property
    def bytes_per_client(self) -> int:
        """CPU bytes one client's variate takes (``4 * P``)."""
        return 4 * self.context.state.num_param_elements

    @override
    def state_dict(self) -> dict[str, Any]:
        control = self.server_control if self.server_control is not None else self._loaded_server_control
        return {
            "server_control": None if control is None else control.detach().cpu(),
            "client_controls": self.client_controls.state_dict(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded_server_control = state_dict["server_control"]
        self.server_control = None
        self.client_controls.load_state_dict(state_dict["client_controls"])


def _one_lr(optimizer: torch.optim.Optimizer) -> float:
    """The optimizer's learning rate, which must be the same in all its parameter groups.

    Raises:
        FederatedConfigError: On several learning rates.
    """
    lrs = {float(group["lr"]) for group in optimizer.param_groups}
    if len(lrs) != 1:
        raise FederatedConfigError(f"Scaffold needs one learning rate for all parameter groups, got {sorted(lrs)}")
    return lrs.pop()


@dataclass
class _CohortSums:
    """A chunk's clients' SCAFFOLD state while they train at once: slot ``k`` of every tensor is client
    ``client_ids[k]``'s (``[K, P]``, ``P`` trainable parameter entries)."""

    client_ids: list[int]
    #: Slot of each client whose update has not been read yet.
    slots: dict[int, int]
    #: Each client's ``c_i`` as it started.
    controls: torch.Tensor
    #: ``c - c_i`` per slot, and its views shaped ``[K, *shape]`` per trainable parameter.
    correction: torch.Tensor
    #: Sum over the slot's steps of ``lr * raw gradient``, and its views.
    grad_sums: torch.Tensor
    #: Sum over the slot's steps of ``lr``.
    lr_sums: list[float]
    correction_views: list[torch.Tensor] = field(default_factory=list)
    grad_sum_views: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    @torch.no_grad()
    def start(cls, client_ids: list[int], controls: list[torch.Tensor | None], server_control: torch.Tensor,
              specs: list[TensorSpec]) -> _CohortSums:
        """Zero sums and the corrections of clients that start from ``controls`` (``None``: zero)."""
        k = len(client_ids)
        stacked = server_control.new_zeros(k, server_control.numel())
        for slot, control in enumerate(controls):
            if control is not None:
                stacked[slot].copy_(control)
        correction = torch.sub(server_control.expand_as(stacked), stacked)
        grad_sums = torch.zeros_like(stacked)
        return cls(
            client_ids=list(client_ids), slots={c: i for i, c in enumerate(client_ids)}, controls=stacked,
            correction=correction, grad_sums=grad_sums, lr_sums=[0.0] * k,
            correction_views=[correction[:, s.offset : s.offset + s.numel].view(k, *s.shape) for s in specs],
            grad_sum_views=[grad_sums[:, s.offset : s.offset + s.numel].view(k, *s.shape) for s in specs],
        )
