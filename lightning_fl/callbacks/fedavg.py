"""The server callback: federated averaging inside Lightning's training loop."""

from __future__ import annotations

import time
import warnings
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_fl.callbacks.algorithm import (
    ClientContext,
    FederatedAlgorithm,
    FederatedContext,
    RoundContext,
    find_algorithms,
)
from lightning_fl.callbacks.batchnorm_guard import BatchNormGuard
from lightning_fl.callbacks.client_seed import seed_client
from lightning_fl.callbacks.guards import GuardedServerStep
from lightning_fl.callbacks.lazy import materialize_lazy_modules
from lightning_fl.callbacks.round_log import RoundStats
from lightning_fl.callbacks.schedulers import StepSchedules, install_stepping_estimate, remove_stepping_estimate
from lightning_fl.callbacks.step_axis import RoundStepAxis
from lightning_fl.callbacks.stopped_round import AbandonedRound, CheckpointMute
from lightning_fl.callbacks.trainer_checks import check_trainer
from lightning_fl.checkpoint import checkpoint_name, install_safe_checkpoint_io, stamp_checkpoint, verify_checkpoint
from lightning_fl.checks import check_int
from lightning_fl.codecs.base import Codec
from lightning_fl.codecs.policy import TensorPolicy
from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.datamodules.plan import RoundPlan
from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError
from lightning_fl.namespaces import Callback
from lightning_fl.seeding import derive_seed
from lightning_fl.server.aggregator import Aggregator, WeightedMeanAggregator
from lightning_fl.server.codec_state import gather_codec_state
from lightning_fl.server.exchange import ClientExchange
from lightning_fl.server.flat import FlatState
from lightning_fl.server.link import Link
from lightning_fl.server.optimizers import ServerOptimizer, ServerSGD
from lightning_fl.server.submodels import ClientSubmodels
from lightning_fl.server.wire import WireSelection

Aggregation = Literal["selected", "all"]


class FederatedAveraging(Callback):
    """Federated averaging (McMahan et al. 2017) of an unmodified LightningModule.

    One Trainer epoch is one round. At a client's first batch the callback loads the global weights (as the
    downlink codec delivers them) into the module, clears the optimizer state and seeds the client's
    randomness from ``(seed, round_idx, client_id)``. At the client's last batch it computes the update
    ``w_client - w_received``, sends it through the uplink codec and adds the decoded update, weighted by the
    client's sample count, to the round's sum. At the round's last batch the sums of all ranks are combined in
    one all-reduce and the server optimizer turns the mean update into the next global model, which is loaded
    into the module before validation runs. A round stopped before its last batch (``trainer.should_stop``,
    ``max_time``, an exception) is abandoned: the module gets the round's starting global model back and no checkpoint
    is written for the rest of the fit (:mod:`~lightning_fl.callbacks.stopped_round`).

    Algorithm callbacks (:class:`~lightning_fl.callbacks.algorithm.FederatedAlgorithm`: SCAFFOLD, personal layers,
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
        # totals that survive checkpoints
        self.uplink_bytes_total = 0
        self.downlink_bytes_total = 0
        self.rejected_updates_total = 0
        self.rejected_rounds_total = 0
        self.rounds_completed = 0
        self.history: list[dict[str, float]] = []
        # runtime state, built at fit start
        self.current_client: int | None = None
        self._state: FlatState | None = None
        self._pending: dict[str, Any] | None = None
        self._warned_nonfinite = False
        self._guard: GuardedServerStep | None = None
        self._algorithms: list[FederatedAlgorithm] = []
        self._sub: ClientSubmodels | None = None
        self._schedules: StepSchedules | None = None
        self._bn_guard: BatchNormGuard | None = None
        #: The per-batch logging axis (``step = round_idx * stride + batch``), bound to the data at fit start.
        self.step_axis = RoundStepAxis()
        self._in_round = False
        #: The round of this fit that was stopped before its end and abandoned (see ``stopped_round``), if any.
        self.abandoned_round: AbandonedRound | None = None
        self._checkpoint_mute = CheckpointMute()

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage == "fit":
            check_trainer(trainer)
            install_safe_checkpoint_io(trainer.strategy)  # before Lightning loads ckpt_path
            self._algorithms = find_algorithms(trainer)
            self._pin_stateful_clients(trainer)
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
        self._bn_guard = BatchNormGuard(pl_module, dm.client_sizes, dm.batch_size, dm.drop_last,
                                        lambda: f"round {trainer.current_epoch}, client {self.current_client}")
        self.step_axis.bind(dm)
        extra_global = set().union(*(a.global_tensor_names(pl_module) for a in self._algorithms))
        state = FlatState(pl_module, pl_module.device, extra_names=extra_global)
        self._state = state
        self._names = [s.name for s in state.float_specs]
        self._int_names = [s.name for s in state.int_specs]
        self._sub = self._find_submodels(pl_module, state)
        self._agg = self.aggregator
        self._agg.bind(state.numel, state.device, extra_numel=state.int_numel + 4, per_coordinate=self._sub is not None,
                       dtype=state.dtype)
        local = frozenset(n for a in self._algorithms for n in a.local_tensor_names(pl_module, state))
        wire = WireSelection(state, local)
        own_codecs = [
            next((c for a in self._algorithms if (c := a.uplink_codec_for(name)) is not None), None)
            for name in wire.shared_of(self._names)
        ]
        self._exchange = ClientExchange(state, wire, self.downlink, self.uplink, own_codecs, self._sub, self._seed)
        if self._pending is not None:
            self._apply_loaded_state(self._pending, state.device)
            self._pending = None
        self._guard = GuardedServerStep(state, self.server_optimizer)
        context = FederatedContext(state, dm, self._seed, trainer.global_rank, trainer.world_size, local)
        for algorithm in self._algorithms:
            algorithm.on_federated_fit_start(context)
        if self.downlink.codec.name != "Identity" or self.uplink.codec.name != "Identity":
            # the codecs see the tensors as the clients hold them (smaller under Federated Dropout)
            table = self.policy.describe(dict(zip(self._names, self._exchange.client_shaped, strict=True)))
            rank_zero_info(f"downlink {self.downlink.codec!r}, uplink {self.uplink.codec!r}; per tensor:\n{table}")

    def _find_submodels(self, pl_module: "pl.LightningModule", state: FlatState) -> ClientSubmodels | None:
        found = [s for a in self._algorithms if (s := a.client_submodels(pl_module, state, self._seed)) is not None]
        if len(found) > 1:
            raise FederatedConfigError(f"only one algorithm may give clients submodels, got {len(found)}")
        return found[0] if found else None

    def _pin_stateful_clients(self, trainer: "pl.Trainer") -> None:
        """A stateful codec or algorithm keeps each client's state on the rank that ran the client: pin clients."""
        stateful = self.downlink.codec.stateful or self.uplink.codec.stateful
        if trainer.world_size > 1 and (stateful or any(a.keeps_client_state for a in self._algorithms)):
            trainer.datamodule.pin_clients_to_ranks = True  # type: ignore[attr-defined]

    @override
    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.step_axis.start_round(trainer, trainer.current_epoch)  # also after a resume restored the loop state

    @override
    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.step_axis.start_round(trainer, trainer.current_epoch)
        plan = self._dm.current_plan
        if plan is None or plan.round_idx != trainer.current_epoch:
            raise FederatedRuntimeError(
                f"the data module has no plan for round {trainer.current_epoch}; is the train loader the "
                "FederatedDataModule's and reload_dataloaders_every_n_epochs=1?"
            )
        self._plan: RoundPlan = plan
        self._agg.reset()
        self._round_bytes = [0, 0]  # downlink, uplink on this rank
        self._round_rejected = 0
        self._round_senders = 0
        self._round_start_time = time.perf_counter()
        self._in_round = True
        if self._schedules:
            self._schedules.round_start()

    @override
    def on_train_batch_start(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any, batch_idx: int
    ) -> None:
        plan = self._plan
        if self._schedules and (plan.first[batch_idx] or plan.batch_client[batch_idx] < 0):
            self._schedules.client_start()  # every client, and every padding batch, starts at the round's lr
        if plan.first[batch_idx]:
            self._start_client(trainer, int(plan.batch_client[batch_idx]))

    @override
    def on_train_batch_end(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        plan = self._plan
        if plan.last[batch_idx]:
            self._finish_client(int(plan.batch_client[batch_idx]))
        if batch_idx == plan.num_batches - 1:
            self._finish_round(trainer)

    @override
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._in_round:  # the epoch ended before the round's last batch: trainer.should_stop
            self._abandon_round(trainer, "trainer.should_stop")
        self.step_axis.end_round(trainer, trainer.current_epoch)
        # Lightning logs epoch-level metrics at the step named "step": make it the round.
        if trainer.loggers:
            pl_module.log("step", float(trainer.current_epoch), logger=True, prog_bar=False)

    @override
    def on_validation_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._in_round:  # Lightning validates before leaving an epoch that trainer.should_stop ends early
            self._abandon_round(trainer, "trainer.should_stop")

    @override
    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        if self._in_round:  # no epoch-end hook follows: nothing to keep from checkpointing
            self._abandon_round(trainer, type(exception).__name__, mute_checkpoints=False)

    @override
    def on_fit_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._checkpoint_mute.unmute()

    @override
    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.loggers and trainer.state.fn == "fit" and not trainer.sanity_checking:
            pl_module.log("step", float(trainer.current_epoch), logger=True, prog_bar=False)

    @override
    def on_save_checkpoint(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", checkpoint: dict[str, Any]
    ) -> None:
        if self.abandoned_round is not None:
            raise FederatedRuntimeError(self.abandoned_round.refuse_checkpoint())
        if self._in_round:
            raise FederatedRuntimeError(
                f"refusing to checkpoint in the middle of round {trainer.current_epoch}: the module holds a "
                "client's weights, not the global model. Checkpoint at round ends (ModelCheckpoint(every_n_epochs=1))"
            )
        stamp_checkpoint(checkpoint, self.state_key)

    @override
    def on_load_checkpoint(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", checkpoint: dict[str, Any]
    ) -> None:
        verify_checkpoint(checkpoint, self.state_key, checkpoint_name(trainer))

    @override
    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        remove_stepping_estimate(trainer)
        if self._bn_guard is not None:
            self._bn_guard.remove()

    # ------------------------------------------------------------------ for algorithm callbacks
    @property
    def state(self) -> FlatState:
        """The global model as flat tensors (built at fit start)."""
        if self._state is None:
            raise FederatedRuntimeError("the global state is built at fit start; the fit has not started")
        return self._state

    @property
    def plan(self) -> RoundPlan:
        """This rank's plan of the current round (which client each batch belongs to)."""
        return self._plan

    @property
    def submodels(self) -> ClientSubmodels | None:
        """The clients' submodels when an algorithm (Federated Dropout) gives them one, else ``None`` (from fit
        start)."""
        return self._sub

    @property
    def algorithms(self) -> list[FederatedAlgorithm]:
        """The algorithm callbacks in the Trainer, in hook order (known from ``setup``)."""
        return list(self._algorithms)

    def client_reference(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The module's trainable parameters and, aligned with them, the weights the current client started
        from (the global model as the downlink delivered it). For callbacks such as :class:`FedProx`.

        Raises:
            FederatedRuntimeError: Outside a client's training (before fit, or on a padding batch).
        """
        if self._state is None or self.current_client is None:
            raise FederatedRuntimeError("client_reference() is only defined while a client trains")
        pairs = [
            (tensor, start)
            for spec, tensor, start in zip(
                self._state.float_specs, self._state.module_float, self._exchange.start_views, strict=True
            )
            if spec.is_parameter
        ]
        return [p for p, _ in pairs], [s for _, s in pairs]

    # ------------------------------------------------------------------ client
    @torch.no_grad()
    def _start_client(self, trainer: "pl.Trainer", client_id: int) -> None:
        state = self._state
        assert state is not None
        self.current_client = client_id
        round_idx = self._plan.round_idx
        older = next((w for a in self._algorithms if (w := a.client_start_weights(round_idx, client_id)) is not None),
                     None)  # an older model version this client downloaded (asynchronous training)
        self._round_bytes[0] += self._exchange.download(round_idx, client_id, older)
        for optimizer in trainer.optimizers:
            optimizer.state.clear()
        seed_client(derive_seed(self._seed, "client", round_idx, client_id), state.device)
        if self._algorithms:
            self._client = ClientContext(round_idx, client_id, int(self._dm.client_sizes[client_id]))
            for algorithm in self._algorithms:
                algorithm.on_client_start(self._client)
            self._exchange.keep_local_start()

    @torch.no_grad()
    def _finish_client(self, client_id: int) -> None:
        exchange = self._exchange
        delta, views = exchange.update()
        # One reduction instead of an elementwise isfinite (100x cheaper): NaN and Inf entries make the sum
        # non-finite; so would finite entries whose sum overflows float32, which no sane update has.
        if not bool(torch.isfinite(delta.sum())):  # the client's own check, before algorithms read the update
            self._reject(client_id)
            return
        weight = float(self._dm.client_sizes[client_id])
        if self._algorithms:
            for algorithm in self._algorithms:
                algorithm.on_client_update(self._client, delta, views)
            for algorithm in self._algorithms:
                weight = algorithm.client_weight(self._client, weight)
        nbytes, update, coverage = exchange.upload(self._plan.round_idx, client_id)
        self._round_bytes[1] += nbytes
        self._round_senders += 1
        if update is None:
            self._reject(client_id)
            return
        self._agg.update(update, weight, extra=exchange.int_increments(), coverage=coverage)
        self.current_client = None

    def _reject(self, client_id: int) -> None:
        self._round_rejected += 1
        self.current_client = None
        if not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(
                f"client {client_id}'s update in round {self._plan.round_idx} is not finite (it contains NaN or "
                "Inf, or is too large to sum in float32) and was dropped from the average; further rejections are "
                "counted in fl/rejected_updates without a warning",
                RuntimeWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------ round
    @torch.no_grad()
    def _finish_round(self, trainer: "pl.Trainer") -> None:
        state = self._state
        assert state is not None
        agg = self._agg
        n_int = state.int_numel
        agg.extras[n_int : n_int + 4] += torch.tensor(
            [self._round_bytes[0], self._round_bytes[1], self._round_rejected, self._round_senders],
            dtype=torch.float64, device=agg.extras.device,
        )
        agg.sync()
        extras = agg.extras.cpu()
        down_bytes, up_bytes, rejected, senders = (int(v) for v in extras[n_int : n_int + 4].tolist())
        reported = agg.count
        is_last = trainer.current_epoch == (trainer.max_epochs or 0) - 1
        round_context = RoundContext(self._plan.round_idx, self._plan.clients, reported, is_last)
        for algorithm in self._algorithms:
            algorithm.on_round_synced(round_context, agg)
        refused = False
        if reported > 0:
            denominator = float(self._dm.client_sizes.sum()) if self.aggregation == "all" else None
            increments = extras[:n_int].round().to(torch.int64).to(state.int_flat.device)
            assert self._guard is not None
            reason = self._guard.step(agg.compute(denominator), increments)
            refused = reason is not None
            if reason is not None:
                self._guard.warn_refused(self._plan.round_idx, reason)
        else:
            warnings.warn(
                f"no client update reached the server in round {self._plan.round_idx}; the global model is unchanged",
                RuntimeWarning,
                stacklevel=2,
            )
        if self._sub is not None:
            self._sub.restore()
        if self._schedules:
            self._schedules.round_end()
        state.write_module()
        self._in_round = False
        self.current_client = None
        self.uplink_bytes_total += up_bytes
        self.downlink_bytes_total += down_bytes
        self.rejected_updates_total += rejected
        self.rejected_rounds_total += int(refused)
        self.rounds_completed += 1
        stats = RoundStats(
            round_idx=self._plan.round_idx,
            clients=reported,
            uplink_bytes=up_bytes,
            downlink_bytes=down_bytes,
            uplink_bytes_total=self.uplink_bytes_total,
            downlink_bytes_total=self.downlink_bytes_total,
            downlink_dense_bytes=self._exchange.dense_bytes * len(self._plan.clients),
            uplink_dense_bytes=self._exchange.dense_bytes * senders,
            rejected_updates=rejected,
            rejected_rounds=int(refused),
            round_seconds=time.perf_counter() - self._round_start_time,
        )
        metrics = stats.metrics()
        for algorithm in self._algorithms:
            metrics.update(algorithm.on_round_end(trainer, round_context))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=stats.round_idx)
        self.history.append(metrics)

    @torch.no_grad()
    def _abandon_round(self, trainer: "pl.Trainer", reason: str, mute_checkpoints: bool = True) -> None:
        """Put the round's starting global model back into the module; see :mod:`stopped_round`."""
        if self._sub is not None:
            self._sub.restore()
        self.state.write_module()  # the global state is only written at the round's end
        self._in_round = False
        self.current_client = None
        self.abandoned_round = AbandonedRound(self._plan.round_idx, reason)
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
            "uplink_bytes_total": self.uplink_bytes_total,
            "downlink_bytes_total": self.downlink_bytes_total,
            "rejected_updates_total": self.rejected_updates_total,
            "rejected_rounds_total": self.rejected_rounds_total,
            "rounds_completed": self.rounds_completed,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict
        self.downlink.codec.load_state_dict(state_dict["downlink"])
        self.uplink.codec.load_state_dict(state_dict["uplink"])
        self.uplink_bytes_total = int(state_dict["uplink_bytes_total"])
        self.downlink_bytes_total = int(state_dict["downlink_bytes_total"])
        self.rejected_updates_total = int(state_dict["rejected_updates_total"])
        self.rejected_rounds_total = int(state_dict.get("rejected_rounds_total", 0))
        self.rounds_completed = int(state_dict["rounds_completed"])

    def _apply_loaded_state(self, state_dict: dict[str, Any], device: torch.device) -> None:
        self.server_optimizer.load_state_dict(state_dict["server_optimizer"], device)

