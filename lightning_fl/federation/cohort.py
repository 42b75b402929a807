"""Vectorized cohorts: a chunk of a round's clients trained as one computation, one local step per Trainer step.

The per-client bookkeeping is the sequential mode's own (:class:`~lightning_fl.federation.client_step.ClientSteps`):
at a chunk's first step every client is started (download through the downlink codec into the module, seeding,
algorithms' ``on_client_start``) and the module's tensors are copied into the client's slot of the stacked tensors
``[K, *shape]``; at a client's last step its slot is copied back into the module and the client is finished (update,
algorithms, uplink codec, aggregator). In between, the user's optimizers hold the stacked parameters (their
``param_groups`` are swapped for each chunk and given back at its end, so the stacked state never outlives its chunk
and checkpoints hold the usual state) and the
module's ``training_step`` is the vmapped one (:mod:`~lightning_fl.federation.cohort_step`). A chunk's randomness
(dropout) is seeded from ``(seed, round, the chunk's clients)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from lightning_fl.datamodules.cohorts import Chunk, CohortLoader, CohortPlan
from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.exceptions import FederatedRuntimeError
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.client_seed import seed_client
from lightning_fl.federation.client_step import ClientSteps
from lightning_fl.federation.cohort_context import CohortContext
from lightning_fl.federation.cohort_mode import Vectorize, choose_cohort_size, decide_vectorized
from lightning_fl.federation.cohort_slots import Slots
from lightning_fl.federation.cohort_step import CohortTrainingStep, StackedState
from lightning_fl.federation.exchange import ClientExchange
from lightning_fl.federation.flat import FlatState
from lightning_fl.federation.optimizer_state import reset_state
from lightning_fl.federation.schedulers import StepSchedules
from lightning_fl.seeding import derive_seed

__all__ = ["CohortEngine", "CohortFit"]


@dataclass(frozen=True)
class CohortFit:
    """What a vectorized fit's chunks need, known at fit start."""

    state: FlatState
    exchange: ClientExchange
    algorithms: list[FederatedAlgorithm]
    schedules: StepSchedules | None
    seed: int
    #: Position (among the state's float tensors) of every module tensor, by ``id``, and of the parameters.
    positions: dict[int, int]
    param_positions: list[int]


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
        self._fit: CohortFit | None = None
        self._batch_idx = 0

    def start_fit(self, vectorize: Vectorize, max_parallel_clients: int | None, trainer: "pl.Trainer",
                  dm: FederatedDataModule, exchange: ClientExchange, schedules: StepSchedules | None,
                  seed: int) -> int | None:
        """Decide whether the fit is vectorized (:mod:`~lightning_fl.federation.cohort_mode`) and, if so, install
        the vectorized ``training_step``. Returns the chunk size, or ``None`` when the clients train one after
        another."""
        pl_module, state, algorithms = trainer.lightning_module, exchange.state, self.clients.algorithms
        vectorized = decide_vectorized(vectorize, trainer, pl_module, algorithms, state, dm)
        size = choose_cohort_size(max_parallel_clients, pl_module, state, dm) if vectorized else 0
        if vectorize == "auto" or (vectorized and max_parallel_clients is None):
            size = _agreed(size, state.device)  # every rank must run the same steps: the smallest, 0 if one declined
        if not size:
            return None
        self.bind(pl_module, state, exchange, algorithms, schedules, seed)
        return size

    def bind(self, pl_module: "pl.LightningModule", state: FlatState, exchange: ClientExchange,
             algorithms: list[FederatedAlgorithm], schedules: StepSchedules | None, seed: int) -> None:
        """Install the vectorized ``training_step`` for the fit."""
        self._fit = CohortFit(state, exchange, algorithms, schedules, seed,
                              positions={id(t): i for i, t in enumerate(state.module_float)},
                              param_positions=[i for i, s in enumerate(state.float_specs) if s.is_parameter])
        self._step = CohortTrainingStep(pl_module, [s.name for s in state.float_specs],
                                        [s.name for s in state.int_specs], self._stacked)
        self._step.install()

    def unbind(self, trainer: "pl.Trainer") -> None:
        """Give the module its ``training_step`` and the optimizers their parameters back (fit end, exception)."""
        self.release(trainer)
        if self._step is not None:
            self._step.remove()
            self._step = None

    @property
    def fit(self) -> CohortFit:
        """The fit's context (from fit start)."""
        if self._fit is None:
            raise FederatedRuntimeError("the vectorized engine is used before fit start")
        return self._fit

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
            if self.fit.schedules:
                self.fit.schedules.client_start()
            slots = Slots(self.fit.state, 1)
            slots.take(0, None, None)
            self._use(trainer, slots)
        elif cohorts.is_first(batch_idx):
            self._start_chunk(trainer, chunk)

    def _start_chunk(self, trainer: "pl.Trainer", chunk: Chunk) -> None:
        if self.fit.schedules:
            self.fit.schedules.client_start()  # every chunk starts at the round's lr, as every client does
        slots = Slots(self.fit.state, len(chunk.clients))
        cursor = self.clients.cursor
        for k, client_id in enumerate(chunk.clients):
            self.clients.start(trainer, client_id)
            slots.take(k, self.fit.exchange, cursor.client)
        cursor.leave_client()
        seed_client(derive_seed(self.fit.seed, "cohort", cursor.plan.round_idx, *chunk.clients), self.fit.state.device)
        self._use(trainer, slots)

    def _use(self, trainer: "pl.Trainer", slots: Slots) -> None:
        """Train ``slots`` from now on: the optimizers step its stacked parameters, from a clear state."""
        self._slots = slots
        if self._saved is None:
            self._saved = [[list(g["params"]) for g in opt.param_groups] for opt in trainer.optimizers]
        for optimizer, groups in zip(trainer.optimizers, self._saved, strict=True):
            for group, params in zip(optimizer.param_groups, groups, strict=True):
                group["params"] = [slots.floats[self._position(p)] for p in params]
            reset_state(optimizer)  # for the stacked parameters

    def _position(self, param: torch.Tensor) -> int:
        position = self.fit.positions.get(id(param))
        if position is None:
            raise FederatedRuntimeError(
                "vectorize steps the module's own parameters only, but an optimizer holds a tensor that is not one "
                "of the module's floating parameters"
            )
        return position

    def before_optimizer_step(self) -> None:
        """Gather the step's gradients into the stacked parameters, and let the algorithms act on them
        (``on_before_cohort_step``)."""
        if self._step is not None:
            self._step.gather_grads()
        slots, chunk = self._slots, self.cohorts.chunk_at(self._batch_idx)
        acting = [a for a in self.fit.algorithms
                  if type(a).on_before_cohort_step is not FederatedAlgorithm.on_before_cohort_step]
        if not acting or slots is None or chunk is None:
            return  # no algorithm acts per step: no stacked starts to build
        local = int(self.cohorts.step_local[self._batch_idx])
        contexts = [c for c in slots.contexts if c is not None]
        flags = tuple(n > local for n in chunk.steps)  # known on the host: algorithms need no device sync to read it
        cohort = CohortContext(
            round_idx=self.clients.cursor.plan.round_idx,
            clients=contexts,
            active=torch.tensor(flags, device=self.fit.state.device),
            params=[slots.floats[i] for i in self.fit.param_positions],
            start_weights=slots.stacked_starts(self.fit.param_positions),
            active_flags=flags,
        )
        for algorithm in acting:
            algorithm.on_before_cohort_step(cohort)

    def batch_end(self, trainer: "pl.Trainer", batch_idx: int) -> bool:
        """Finish the clients whose last local step this was, and free the chunk's stacked state after its last step.
        Returns whether the step closes the round (the server step follows)."""
        cohorts, slots = self.cohorts, self._slots
        chunk = cohorts.chunk_at(batch_idx)
        if chunk is not None and slots is not None:
            self._finish(chunk, slots, int(cohorts.step_local[batch_idx]))
        if chunk is None or cohorts.closes_chunk(batch_idx):
            self.release(trainer)  # stacked state never outlives its chunk
        return batch_idx == cohorts.num_steps - 1

    def _finish(self, chunk: Chunk, slots: Slots, local_step: int) -> None:
        cursor = self.clients.cursor
        for k in chunk.finishing(local_step):
            slots.give(k, self.fit.exchange)
            cursor.enter_client(chunk.clients[k], slots.contexts[k])
            self.clients.finish(chunk.clients[k])

    def release(self, trainer: "pl.Trainer") -> None:
        """Give the optimizers the module's parameters back, with a clear state (a chunk's end, a round's end)."""
        self._slots = None
        if self._saved is not None:
            for optimizer, groups in zip(trainer.optimizers, self._saved, strict=True):
                optimizer.state.clear()
                for group, params in zip(optimizer.param_groups, groups, strict=True):
                    group["params"] = params
            self._saved = None


def _agreed(size: int, device: torch.device) -> int:
    """The smallest ``size`` over the ranks (``size`` itself with one process): ranks that chose their chunk size
    from their own free memory, or whose ``"auto"`` trial differed, must still plan the same steps."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return size
    value = torch.tensor([size], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return int(value.item())
