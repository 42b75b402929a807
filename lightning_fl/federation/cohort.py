"""Vectorized cohorts: a chunk of a round's clients trained as one computation, one local step per Trainer step.

The per-client bookkeeping is the sequential mode's own (:class:`~lightning_fl.federation.client_step.ClientSteps`):
at a chunk's first step every client is started (download through the downlink codec into the module, seeding,
algorithms' ``on_client_start``) and the module's tensors are copied into the client's slot of the stacked tensors
``[K, *shape]``; at a client's last step its slot is copied back into the module and the client is finished (update,
algorithms, uplink codec, aggregator). In between, the user's optimizers hold the stacked parameters (their
``param_groups`` are swapped for the round and given back at its end, so checkpoints hold the usual state) and the
module's ``training_step`` is the vmapped one (:mod:`~lightning_fl.federation.cohort_step`). A chunk's randomness
(dropout) is seeded from ``(seed, round, the chunk's clients)``.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from lightning_fl.datamodules.cohorts import Chunk, CohortLoader, CohortPlan
from lightning_fl.exceptions import FederatedRuntimeError
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.client_seed import seed_client
from lightning_fl.federation.client_step import ClientSteps
from lightning_fl.federation.cohort_context import CohortContext
from lightning_fl.federation.cohort_step import CohortTrainingStep, StackedState
from lightning_fl.federation.context import ClientContext
from lightning_fl.federation.exchange import ClientExchange
from lightning_fl.federation.flat import FlatState
from lightning_fl.federation.schedulers import StepSchedules
from lightning_fl.seeding import derive_seed

__all__ = ["CohortEngine", "Slots"]


class Slots:
    """The stacked state of one chunk: every client's tensors in its slot ``k``, its start and its context.

    Args:
        state: The global state (the module's tensors by reference).
        size: ``K``, the chunk's clients.
    """

    def __init__(self, state: FlatState, size: int) -> None:
        self.state, self.size = state, size
        self.floats = [torch.empty((size, *t.shape), dtype=t.dtype, device=t.device) for t in state.module_float]
        for stacked, tensor in zip(self.floats, state.module_float, strict=True):
            stacked.requires_grad_(tensor.requires_grad)
        self.ints = [torch.empty((size, *t.shape), dtype=t.dtype, device=t.device) for t in state.module_int]
        #: Each slot's start (the exchange's start views when they are not the global state's), its context.
        self.starts: list[list[torch.Tensor] | None] = [None] * size
        self.start_refs: list[list[torch.Tensor]] = [state.views] * size
        self.contexts: list[ClientContext | None] = [None] * size

    @torch.no_grad()
    def take(self, k: int, exchange: ClientExchange | None, context: ClientContext | None) -> None:
        """Copy the module's tensors (a client just started) into slot ``k``."""
        for stacked, tensor in zip(self.floats + self.ints, self.state.module_float + self.state.module_int,
                                   strict=True):
            stacked[k].copy_(tensor)
        self.contexts[k] = context
        if exchange is not None:
            self.start_refs[k] = exchange.start_views
            if exchange.start_views is not self.state.views:
                self.starts[k] = [t.clone() for t in exchange.start_views]

    @torch.no_grad()
    def give(self, k: int, exchange: ClientExchange) -> None:
        """Copy slot ``k`` into the module, and its start back into the exchange (the client's last step is done)."""
        torch._foreach_copy_(self.state.module_float, [t[k] for t in self.floats])
        for tensor, stacked in zip(self.state.module_int, self.ints, strict=True):
            tensor.copy_(stacked[k])
        exchange.start_views = self.start_refs[k]
        start = self.starts[k]
        if start is not None:
            torch._foreach_copy_(exchange.start_views, start)

    def stacked_starts(self, positions: list[int]) -> list[torch.Tensor]:
        """The slots' starting weights of the float tensors at ``positions``, stacked ``[K, *shape]``."""
        out = []
        for i in positions:
            rows = [s[i] if s is not None else refs[i] for s, refs in zip(self.starts, self.start_refs, strict=True)]
            out.append(torch.stack(rows))
        return out


class CohortEngine:
    """Runs a vectorized fit's chunks (see the module docstring); driven by the server callback's hooks.

    Args:
        clients: The sequential mode's client bookkeeping, reused for every client's start and finish.
    """

    def __init__(self, clients: ClientSteps) -> None:
        self.clients = clients
        self._slots: Slots | None = None
        self._saved: list[list[list[torch.Tensor]]] | None = None
        self._step: CohortTrainingStep | None = None
        self._cohorts: CohortPlan | None = None
        self._batch_idx = 0

    def bind(self, pl_module: "pl.LightningModule", state: FlatState, exchange: ClientExchange,
             algorithms: list[FederatedAlgorithm], schedules: StepSchedules | None, seed: int) -> None:
        """Install the vectorized ``training_step`` for the fit."""
        self.state, self.exchange, self.algorithms, self.schedules, self.seed = (state, exchange, algorithms,
                                                                                 schedules, seed)
        self._positions = {id(t): i for i, t in enumerate(state.module_float)}
        self._param_positions = [i for i, s in enumerate(state.float_specs) if s.is_parameter]
        self._step = CohortTrainingStep(pl_module, [s.name for s in state.float_specs],
                                        [s.name for s in state.int_specs], self._stacked)
        self._step.install()

    def unbind(self, trainer: "pl.Trainer") -> None:
        """Give the module its ``training_step`` and the optimizers their parameters back (fit end, exception)."""
        self.release(trainer)
        if self._step is not None:
            self._step.remove()
            self._step = None

    def _stacked(self) -> StackedState:
        if self._slots is None:
            raise FederatedRuntimeError("the vectorized training_step ran outside a chunk of clients")
        return self._slots.floats, self._slots.ints

    def start_round(self, trainer: "pl.Trainer") -> None:
        """Read the round's chunks from its loader."""
        loader = trainer.train_dataloader
        if not isinstance(loader, CohortLoader):
            raise FederatedRuntimeError(
                "vectorize needs the FederatedDataModule's cohort loader for every round; do not pass "
                f"train_dataloaders= to fit() or override train_dataloader(), got {type(loader).__name__}"
            )
        self._cohorts = loader.cohorts

    @property
    def cohorts(self) -> CohortPlan:
        """The current round's chunks."""
        if self._cohorts is None:
            raise FederatedRuntimeError("no vectorized round has started yet")
        return self._cohorts

    def batch_start(self, trainer: "pl.Trainer", batch_idx: int) -> None:
        """Start a chunk at its first step (or stack the module once for a padding step)."""
        self._batch_idx = batch_idx
        cohorts = self.cohorts
        chunk = cohorts.chunk_at(batch_idx)
        if chunk is None:  # a padding step: trains a copy of the module, discarded at the round's end
            if self.schedules:
                self.schedules.client_start()
            self._use(trainer, Slots(self.state, 1))
            self._slots.take(0, None, None)  # type: ignore[union-attr]
        elif cohorts.is_first(batch_idx):
            self._start_chunk(trainer, chunk)

    def _start_chunk(self, trainer: "pl.Trainer", chunk: Chunk) -> None:
        if self.schedules:
            self.schedules.client_start()  # every chunk starts at the round's lr, as every client does
        slots = Slots(self.state, len(chunk.clients))
        cursor = self.clients.cursor
        for k, client_id in enumerate(chunk.clients):
            self.clients.start(trainer, client_id)
            slots.take(k, self.exchange, cursor.client)
        cursor.leave_client()
        seed_client(derive_seed(self.seed, "cohort", cursor.plan.round_idx, *chunk.clients), self.state.device)
        self._use(trainer, slots)

    def _use(self, trainer: "pl.Trainer", slots: Slots) -> None:
        """Train ``slots`` from now on: the optimizers step its stacked parameters, from a clear state."""
        self._slots = slots
        if self._saved is None:
            self._saved = [[list(g["params"]) for g in opt.param_groups] for opt in trainer.optimizers]
        for optimizer, groups in zip(trainer.optimizers, self._saved, strict=True):
            optimizer.state.clear()
            for group, params in zip(optimizer.param_groups, groups, strict=True):
                group["params"] = [slots.floats[self._position(p)] for p in params]

    def _position(self, param: torch.Tensor) -> int:
        position = self._positions.get(id(param))
        if position is None:
            raise FederatedRuntimeError(
                "vectorize steps the module's own parameters only, but an optimizer holds a tensor that is not one "
                "of the module's floating parameters"
            )
        return position

    def before_optimizer_step(self) -> None:
        """Let the algorithms act on the chunk's gradients (``on_before_cohort_step``)."""
        slots, chunk = self._slots, self.cohorts.chunk_at(self._batch_idx)
        if not self.algorithms or slots is None or chunk is None:
            return
        local = int(self.cohorts.step_local[self._batch_idx])
        contexts = [c for c in slots.contexts if c is not None]
        cohort = CohortContext(
            round_idx=self.clients.cursor.plan.round_idx,
            clients=contexts,
            active=torch.tensor([n > local for n in chunk.steps], device=self.state.device),
            params=[slots.floats[i] for i in self._param_positions],
            start_weights=slots.stacked_starts(self._param_positions),
        )
        for algorithm in self.algorithms:
            algorithm.on_before_cohort_step(cohort)

    def batch_end(self, batch_idx: int) -> None:
        """Finish the clients whose last local step this was."""
        cohorts, slots = self.cohorts, self._slots
        chunk = cohorts.chunk_at(batch_idx)
        if chunk is None or slots is None:
            return
        cursor = self.clients.cursor
        for k in chunk.finishing(int(cohorts.step_local[batch_idx])):
            slots.give(k, self.exchange)
            cursor.enter_client(chunk.clients[k], slots.contexts[k])
            self.clients.finish(chunk.clients[k])

    def release(self, trainer: "pl.Trainer") -> None:
        """Give the optimizers the module's parameters back, with a clear state (the round's end)."""
        self._slots = None
        if self._saved is not None:
            for optimizer, groups in zip(trainer.optimizers, self._saved, strict=True):
                optimizer.state.clear()
                for group, params in zip(optimizer.param_groups, groups, strict=True):
                    group["params"] = params
            self._saved = None
