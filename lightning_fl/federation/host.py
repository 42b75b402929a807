"""The server callback: federated averaging inside Lightning's training loop."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_fl.checkpoint import checkpoint_name, install_safe_checkpoint_io, verify_checkpoint
from lightning_fl.checks import check_int
from lightning_fl.codecs.base import Codec
from lightning_fl.codecs.policy import TensorPolicy
from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.datamodules.plan import PlanRequest
from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError
from lightning_fl.federation.algorithm import (
    FederatedAlgorithm,
    FederatedContext,
    check_capabilities,
    find_algorithms,
)
from lightning_fl.federation.batchnorm_guard import BatchNormGuard
from lightning_fl.federation.client_step import ClientSteps
from lightning_fl.federation.codec_state import gather_codec_state
from lightning_fl.federation.cohort import CohortEngine
from lightning_fl.federation.cohort_mode import Vectorize, check_vectorize
from lightning_fl.federation.cursor import RoundCursor, log_round_step
from lightning_fl.federation.exchange import ClientExchange
from lightning_fl.federation.flat import FlatState
from lightning_fl.federation.guards import GuardedServerStep
from lightning_fl.federation.layout import ClientLayout, WholeModel
from lightning_fl.federation.lazy import materialize_lazy_modules
from lightning_fl.federation.link import Link
from lightning_fl.federation.schedulers import StepSchedules, install_stepping_estimate, remove_stepping_estimate
from lightning_fl.federation.server_step import RunTotals, RunTotalsView, ServerStep
from lightning_fl.federation.step_axis import RoundStepAxis
from lightning_fl.federation.stopped_round import AbandonedRound, CheckpointMute
from lightning_fl.federation.trainer_checks import prepare_trainer
from lightning_fl.federation.wire import WireSelection
from lightning_fl.namespaces import Callback
from lightning_fl.seeding import derive_seed
from lightning_fl.server.aggregator import Aggregator, WeightedMeanAggregator
from lightning_fl.server.optimizers import ServerOptimizer, ServerSGD

Aggregation = Literal["selected", "all"]


class FederatedAveraging(RunTotalsView, Callback):
    """Federated averaging (McMahan et al. 2017) of an unmodified LightningModule.

    One Trainer epoch is one round. At a client's first batch the callback loads the global weights (as the
    downlink codec delivers them) into the module, clears the optimizer state and seeds the client's
    randomness from ``(seed, round_idx, client_id)``. At the client's last batch it computes the update
    ``w_client - w_received``, sends it through the uplink codec and adds the decoded update, weighted by the
    client's sample count, to the round's sum. At the round's last batch the sums of all ranks are combined in
    one all-reduce and the server optimizer turns the mean update into the next global model, which is loaded
    into the module before validation runs. A round stopped before its last batch (``trainer.should_stop``,
    ``max_time``, an exception) is abandoned: the module gets the round's starting global model back and no checkpoint
    is written for the rest of the fit (:mod:`~lightning_fl.federation.stopped_round`).

    Algorithm callbacks (:class:`~lightning_fl.federation.algorithm.FederatedAlgorithm`: SCAFFOLD, personal layers,
    differential privacy, attacks) in the same Trainer are called at each of these points.

    Args:
        aggregation: ``"selected"`` averages the clients that trained; ``"all"`` averages over every client,
            counting a client that was not sampled as a zero update (the selected mean scaled by
            ``sum_selected n_k / sum_all n_k``).
        server_optimizer: How the mean update is applied (default :class:`ServerSGD` with ``lr=1``: plain FedAvg).
        downlink: Codec of the global model on its way to each client (default: raw float32). Clients train
            from the decoded, lossy model, as in Caldas et al. (2018).
        uplink: Codec of each client's update on its way to the server (default: raw float32). The server
            aggregates the decoded updates.
        policy: Which tensors the codecs apply to (default ``TensorPolicy(min_numel=1024)``: small tensors such
            as biases and norms, and integer buffers, travel as raw bytes). Reported once at fit start.
        seed: Seed of client randomness and codec seeds; ``None`` takes the data module's seed.
        aggregator: How the round's updates are combined (default :class:`WeightedMeanAggregator`; robust choices
            in :mod:`lightning_fl.server.robust`).
        vectorize: ``True`` trains each rank's clients of a round at once, vmapped over stacked weights
            (:mod:`~lightning_fl.federation.cohort`); ``"auto"`` does where it is possible and faster (not for
            convolutions on a CPU) and says which it picked (:attr:`vectorized`); ``False``: one after another.
        max_parallel_clients: The most clients trained at once when vectorized; ``None``: all of a rank's round on
            a CPU, what fits in free memory on a GPU (:mod:`~lightning_fl.federation.cohort_mode`).

    Example:
        >>> FederatedAveraging(aggregation="all").aggregation
        'all'
    """

    def __init__(
        self,
        aggregation: Aggregation = "selected",
        server_optimizer: ServerOptimizer | None = None,
        downlink: Codec | None = None,
        uplink: Codec | None = None,
        policy: TensorPolicy | None = None,
        seed: int | None = None,
        aggregator: Aggregator | None = None,
        vectorize: Vectorize = False,
        max_parallel_clients: int | None = None,
    ) -> None:
        if aggregation not in ("selected", "all"):
            raise FederatedConfigError(f"aggregation must be 'selected' or 'all', got {aggregation!r}")
        for name, value, cls in (("server_optimizer", server_optimizer, ServerOptimizer), ("downlink", downlink, Codec),
                                 ("uplink", uplink, Codec), ("policy", policy, TensorPolicy),
                                 ("aggregator", aggregator, Aggregator)):
            if value is not None and not isinstance(value, cls):
                raise FederatedConfigError(f"{name} must be a lightning_fl {cls.__name__}, got {type(value).__name__}")
        self.aggregation: Aggregation = aggregation
        self.aggregator = aggregator if aggregator is not None else WeightedMeanAggregator()
        self.server_optimizer = server_optimizer if server_optimizer is not None else ServerSGD(lr=1.0)
        self.policy = policy if policy is not None else TensorPolicy()
        self.downlink = Link(downlink, "downlink", select=self.policy.select)
        self.uplink = Link(uplink, "uplink", select=self.policy.select)
        self.seed = None if seed is None else check_int("seed", seed, low=0)
        self.vectorize, self.max_parallel_clients = check_vectorize(vectorize, max_parallel_clients)
        #: Whether this fit trains its clients vectorized (decided at fit start).
        self.vectorized = False
        #: Totals that survive checkpoints, and the rounds' logged metrics.
        self.totals = RunTotals()
        #: Where the fit is in the current round.
        self.round_cursor = RoundCursor()
        self._clients = ClientSteps(self.round_cursor)
        self._server_step = ServerStep(self.round_cursor, self._clients, self.totals)
        self._cohorts = CohortEngine(self._clients)
        self._cohort_size: int | None = None
        # runtime state, built at fit start
        self._state: FlatState | None = None
        self._pending: dict[str, Any] | None = None
        self._guard: GuardedServerStep | None = None
        self._algorithms: list[FederatedAlgorithm] = []
        self._world_size = 1
        self._sub: ClientLayout | None = None
        self._schedules: StepSchedules | None = None
        self._bn_guard: BatchNormGuard | None = None
        #: The per-batch logging axis (``step = round_idx * stride + batch``), bound to the data at fit start.
        self.step_axis = RoundStepAxis()
        #: The round of this fit that was stopped before its end and abandoned (see ``stopped_round``), if any.
        self.abandoned_round: AbandonedRound | None = None
        self._checkpoint_mute = CheckpointMute()

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage == "fit":
            prepare_trainer(trainer)
            install_safe_checkpoint_io(trainer.strategy, self.state_key)  # before Lightning loads ckpt_path
            self._algorithms = find_algorithms(trainer)
            self._world_size = trainer.world_size
            check_capabilities(self._algorithms, (self.downlink, self.uplink))
            install_stepping_estimate(trainer, lambda: trainer.datamodule.max_client_steps)  # type: ignore[attr-defined]
            # Rounds are short by design; Lightning would warn every round that they are shorter than
            # log_every_n_steps.
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        dm = trainer.datamodule  # type: ignore[attr-defined]
        assert isinstance(dm, FederatedDataModule)
        self._dm = dm
        self.abandoned_round = None
        self._seed = dm.seed if self.seed is None else self.seed
        materialize_lazy_modules(trainer, pl_module, dm)
        self._schedules = StepSchedules(trainer, dm.max_client_steps)
        cursor = self.round_cursor
        self._bn_guard = BatchNormGuard(pl_module, dm.client_sizes, dm.batch_size, dm.drop_last,
                                        lambda: f"round {trainer.current_epoch}, client {cursor.current_client}")
        self.step_axis.bind(dm)
        extra_global = set().union(*(a.global_tensor_names(pl_module) for a in self._algorithms))
        state = FlatState(pl_module, pl_module.device, extra_names=extra_global)
        self._state = state
        self._names = [s.name for s in state.float_specs]
        self._int_names = [s.name for s in state.int_specs]
        layout = self._find_layout(pl_module, state)
        self._sub = layout if layout.per_coordinate else None
        self._agg = self.aggregator
        self._agg.bind(state.numel, state.device, per_coordinate=self._sub is not None, dtype=state.dtype)
        local = frozenset(n for a in self._algorithms for n in a.local_tensor_names(pl_module, state))
        wire = WireSelection(state, local)
        own_codecs = [
            next((c for a in self._algorithms if (c := a.uplink_codec_for(name)) is not None), None)
            for name in wire.shared_of(self._names)
        ]
        self._exchange = ClientExchange(state, wire, self.downlink, self.uplink, own_codecs, layout, self._seed)
        if self._pending is not None:
            self._apply_loaded_state(self._pending, state.device)
            self._pending = None
        self._guard = GuardedServerStep(state, self.server_optimizer)
        context = self._context(trainer, state, dm, local, layout)
        self._clients.bind(state, self._exchange, self._algorithms, dm.client_sizes, self._seed, self._agg,
                           self._server_step.reducer)
        self._server_step.bind(state, self._agg, self._algorithms, dm, self.aggregation, self._guard, self._sub,
                               self._schedules, self._exchange)
        for algorithm in self._algorithms:
            algorithm.on_federated_fit_start(context)
        self._cohort_size = self._cohorts.start_fit(self.vectorize, self.max_parallel_clients, trainer, dm,
                                                    self._exchange, self._schedules, self._seed)
        self.vectorized = self._cohort_size is not None
        if self.downlink.codec.name != "Identity" or self.uplink.codec.name != "Identity":
            # the codecs see the tensors as the clients hold them (smaller under Federated Dropout)
            table = self.policy.describe(dict(zip(self._names, self._exchange.client_shaped, strict=True)))
            rank_zero_info(f"downlink {self.downlink.codec!r}, uplink {self.uplink.codec!r}; per tensor:\n{table}")

    def _find_layout(self, pl_module: "pl.LightningModule", state: FlatState) -> ClientLayout:
        """The layout the ``provides_submodels`` algorithm gives (one at most: checked at setup), else the whole
        model."""
        found = [layout for a in self._algorithms if a.provides_submodels
                 and (layout := a.client_layout(pl_module, state, self._seed)) is not None]
        return found[0] if found else WholeModel(state)

    def _context(self, trainer: "pl.Trainer", state: FlatState, dm: FederatedDataModule, local: frozenset[str],
                 layout: ClientLayout) -> FederatedContext:
        """What the algorithms see of this fit."""
        seed, algorithms = self._seed, self._algorithms

        def load_client_tensors(client_id: int) -> None:
            for algorithm in algorithms:
                algorithm.load_client_tensors(client_id)

        return FederatedContext(
            state, dm, seed, trainer.global_rank, trainer.world_size, local, layout=layout,
            aggregation=self.aggregation, aggregator=self._agg, round=self.round_cursor,
            load_client_tensors=load_client_tensors, estimate_payload_bytes=self._exchange.estimate_payload_bytes,
            seed_for=lambda *keys: derive_seed(seed, *keys), add_sum_state=self._server_step.reducer.add_state,
        )

    def plan_request(self) -> PlanRequest:
        """What the round plans must honour (this callback is a :class:`~lightning_fl.datamodules.plan.RoundDriver`):
        a stateful codec or algorithm keeps each client's state on the rank that ran the client, so clients are
        pinned to their owner rank when several processes run; an algorithm that declares
        ``decides_participation`` decides who trains."""
        stateful = self.downlink.codec.stateful or self.uplink.codec.stateful
        pin = self._world_size > 1 and (stateful or any(a.keeps_client_state for a in self._algorithms))
        deciding = [a for a in self._algorithms if a.decides_participation]
        return PlanRequest(pin_clients=pin, participation=deciding[0].participation if deciding else None,
                           cohort_size=self._cohort_size)

    @override
    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.step_axis.start_round(trainer, trainer.current_epoch)  # also after a resume restored the loop state

    @override
    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.step_axis.start_round(trainer, trainer.current_epoch)
        self.round_cursor.start_round(trainer)
        self._server_step.start_round()
        self._clients.start_round()
        if self._schedules:
            self._schedules.round_start()
        if self.vectorized:
            self._cohorts.start_round(trainer)

    @override
    def on_train_batch_start(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any, batch_idx: int
    ) -> None:
        if self.vectorized:
            self._cohorts.batch_start(trainer, batch_idx)
            return
        cursor = self.round_cursor
        first = cursor.is_first(batch_idx)
        if self._schedules and (first or cursor.client_of(batch_idx) < 0):
            self._schedules.client_start()  # every client, and every padding batch, starts at the round's lr
        if first:
            self._clients.start(trainer, cursor.client_of(batch_idx))

    @override
    def on_train_batch_end(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        cursor = self.round_cursor
        if self.vectorized:
            if self._cohorts.batch_end(trainer, batch_idx):
                self._server_step.finish(trainer)
            return
        if cursor.is_last(batch_idx):
            self._clients.finish(cursor.client_of(batch_idx))
        if cursor.closes_round(batch_idx):
            self._server_step.finish(trainer)

    @override
    def on_before_optimizer_step(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", optimizer: torch.optim.Optimizer
    ) -> None:
        if self.vectorized:
            self._cohorts.before_optimizer_step()

    @override
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.round_cursor.in_round:  # the epoch ended before the round's last batch: trainer.should_stop
            self._abandon_round(trainer, "trainer.should_stop")
        self.step_axis.end_round(trainer, trainer.current_epoch)
        log_round_step(trainer, pl_module)

    @override
    def on_validation_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # Lightning validates before leaving an epoch that trainer.should_stop ends early
        if self.round_cursor.in_round:
            self._abandon_round(trainer, "trainer.should_stop")

    @override
    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        if self.round_cursor.in_round:  # no epoch-end hook follows: nothing to keep from checkpointing
            self._abandon_round(trainer, type(exception).__name__, mute_checkpoints=False)
        self._cohorts.unbind(trainer)

    @override
    def on_fit_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._checkpoint_mute.unmute()
        self._cohorts.unbind(trainer)

    @override
    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            log_round_step(trainer, pl_module)

    @override
    def on_save_checkpoint(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", checkpoint: dict[str, Any]
    ) -> None:
        if self.abandoned_round is not None:
            raise FederatedRuntimeError(self.abandoned_round.refuse_checkpoint())
        self.round_cursor.refuse_mid_round_checkpoint(
            trainer, "the module holds a client's weights, not the global model"
        )

    @override
    def on_load_checkpoint(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", checkpoint: dict[str, Any]
    ) -> None:
        verify_checkpoint(checkpoint, self.state_key, checkpoint_name(trainer))

    @override
    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        remove_stepping_estimate(trainer)
        self._cohorts.unbind(trainer)
        if self._bn_guard is not None:
            self._bn_guard.remove()

    @property
    def state(self) -> FlatState:
        """The global model as flat tensors (built at fit start)."""
        if self._state is None:
            raise FederatedRuntimeError("the global state is built at fit start; the fit has not started")
        return self._state

    # ------------------------------------------------------------------ round
    @torch.no_grad()
    def _abandon_round(self, trainer: "pl.Trainer", reason: str, mute_checkpoints: bool = True) -> None:
        """Put the round's starting global model back into the module; see :mod:`stopped_round`."""
        self._cohorts.release(trainer)
        if self._sub is not None:
            self._sub.restore()
        self.state.write_module()  # the global state is only written at the round's end
        self.round_cursor.end_round()
        self.abandoned_round = AbandonedRound(self.round_cursor.plan.round_idx, reason)
        if mute_checkpoints:
            self._checkpoint_mute.mute(trainer)
        rank_zero_warn(self.abandoned_round.describe())

    # ------------------------------------------------------------------ checkpoints
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "server_optimizer": self.server_optimizer.state_dict(),
            "downlink": gather_codec_state(self.downlink.codec),
            "uplink": gather_codec_state(self.uplink.codec),
            "uplink_bytes_total": self.totals.uplink_bytes_total,
            "downlink_bytes_total": self.totals.downlink_bytes_total,
            "rejected_updates_total": self.totals.rejected_updates_total,
            "rejected_rounds_total": self.totals.rejected_rounds_total,
            "rounds_completed": self.totals.rounds_completed,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict
        self.downlink.codec.load_state_dict(state_dict["downlink"])
        self.uplink.codec.load_state_dict(state_dict["uplink"])
        self.totals.uplink_bytes_total = int(state_dict["uplink_bytes_total"])
        self.totals.downlink_bytes_total = int(state_dict["downlink_bytes_total"])
        self.totals.rejected_updates_total = int(state_dict["rejected_updates_total"])
        self.totals.rejected_rounds_total = int(state_dict.get("rejected_rounds_total", 0))
        self.totals.rounds_completed = int(state_dict["rounds_completed"])

    def _apply_loaded_state(self, state_dict: dict[str, Any], device: torch.device) -> None:
        self.server_optimizer.load_state_dict(state_dict["server_optimizer"], device)

