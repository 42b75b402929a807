"""FedBuff (Nguyen et al. 2022): asynchronous clients on a simulated clock, buffered, staleness-weighted updates."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from typing_extensions import override

from lightning_fl.checks import check_choice, check_int, check_positive
from lightning_fl.datamodules.plan import Participation
from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError
from lightning_fl.federation.algorithm import ClientContext, FederatedContext, RoundContext
from lightning_fl.namespaces import both
from lightning_fl.seeding import derive_seed
from lightning_fl.systems.asynchronous import BufferedAsyncSchedule, ClientRun, staleness_weight
from lightning_fl.systems.clock import ClientTimes, step_samples, step_seconds, transfer_seconds
from lightning_fl.systems.devices import SimulatedDevices
from lightning_fl.systems.profiles import ClientProfiles

StalenessRule = Literal["constant", "sqrt", "polynomial"]


class FedBuff(SimulatedDevices):
    """Asynchronous federated training with a buffer of ``buffer_size`` updates (FedBuff).

    One Trainer epoch is one **server update**. ``concurrency`` clients are in flight at once on the simulated
    clock (:class:`~lightning_fl.systems.BufferedAsyncSchedule`), each from the model version it downloaded; they
    finish in clock order (download + its full local work at its profile's speed, with a per-start log-normal
    jitter + upload, as in :class:`SystemsSimulation`), a finished client is replaced at once by an idle one
    (uniformly drawn), and when ``buffer_size`` updates are buffered those clients train in this epoch, each from
    the version it downloaded, and the server applies their sample-weighted mean through its server optimizer.
    Each update ``w_client - w_downloaded`` is first multiplied by the staleness weight ``s(t)``, ``t`` = server
    updates applied since the client downloaded: ``"constant"`` 1, ``"sqrt"`` ``1/sqrt(1+t)``, ``"polynomial"``
    ``(1+t)^-a``. With ``buffer_size = concurrency = num_clients`` every update has staleness 0 and the run is
    synchronous FedAvg over all clients, bit for bit.

    The server keeps the global model versions that clients in flight started from (at most ``concurrency + 1``
    flat copies on the module's device) and saves them, the queue and the clock in checkpoints. The data
    module's ``clients_per_round`` and ``client_sampling`` are not used; profiles' availability and failure
    probabilities are not simulated here (see :class:`SystemsSimulation`). Integer buffers (BatchNorm's batch
    counter) always come from the current model. One process only.

    Logged with the round's scalars: ``fl/sim_seconds`` (clock time of this server update),
    ``fl/sim_seconds_total``, ``fl/staleness_mean``, ``fl/staleness_max``, ``fl/energy_joules(_total)``,
    ``fl/sim_bytes(_total)``; with a TensorBoard logger, the histogram ``fl/staleness``. :attr:`staleness_counts`
    holds the whole distribution.

    Args:
        buffer_size: Updates per server update (K), in ``[1, num_clients]``.
        concurrency: Clients in flight, in ``[1, num_clients]`` (``None``: ``min(num_clients, 2 * buffer_size)``).
        staleness: ``"constant"``, ``"sqrt"`` or ``"polynomial"``.
        staleness_exponent: ``a`` of the polynomial rule, > 0.
        profiles: As in :class:`SystemsSimulation`.
        flops_per_sample: Training FLOPs per sample; ``None`` counts them once before the first round (on a
            client's submodel under Federated Dropout).
        seed: Seed of the draws and jitter; ``None`` takes the server callback's (else the data module's).

    Example:
        >>> FedBuff(buffer_size=5, staleness="polynomial", staleness_exponent=1.0).staleness
        'polynomial'
    """

    # Each client's older start is given per client (client_start_weights, which the runtime downloads at that
    # client's start) and its staleness weight applied in on_client_update: stacked clients may start from different
    # model versions.
    supports_cohorts = True

    def __init__(
        self,
        buffer_size: int = 10,
        concurrency: int | None = None,
        staleness: StalenessRule = "sqrt",
        staleness_exponent: float = 0.5,
        profiles: ClientProfiles | str = "phones",
        flops_per_sample: float | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(profiles, flops_per_sample, seed)
        self.buffer_size = check_int("buffer_size", buffer_size, low=1)
        self.concurrency = None if concurrency is None else check_int("concurrency", concurrency, low=1)
        self.staleness = check_choice("staleness", staleness, ("constant", "sqrt", "polynomial"))
        self.staleness_exponent = check_positive("staleness_exponent", staleness_exponent)
        #: How many applied updates had each staleness, over the whole fit.
        self.staleness_counts: dict[int, int] = {}
        #: ``(client_id, staleness)`` of the updates of the latest server update, in clock order.
        self.last_updates: list[tuple[int, int]] = []
        self._queue: BufferedAsyncSchedule | None = None
        self._loaded_queue: dict[str, Any] | None = None
        self._loaded_versions: dict[int, torch.Tensor] | None = None
        self._versions: dict[int, torch.Tensor] = {}
        self._client_versions: dict[int, int] = {}
        self._runs: list[ClientRun] = []
        self._clock_before = 0.0
        self._current = 0

    # ------------------------------------------------------------------ fit start
    @override
    def on_federated_fit_start(self, context: FederatedContext) -> None:
        super().on_federated_fit_start(context)
        if context.world_size > 1:
            raise FederatedConfigError(
                f"FedBuff simulates one asynchronous server in one process: use devices=1, got world_size="
                f"{context.world_size}"
            )
        if self.buffer_size > context.datamodule.num_clients:
            raise FederatedConfigError(
                f"buffer_size must be in [1, num_clients={context.datamodule.num_clients}], got {self.buffer_size}"
            )
        n = context.datamodule.num_clients
        concurrency = self.concurrency if self.concurrency is not None else min(n, 2 * self.buffer_size)
        self._queue = BufferedAsyncSchedule(n, concurrency, self.buffer_size, self._base_seed())
        if self._loaded_queue is not None:
            self._queue.load_state_dict(self._loaded_queue)
            self._loaded_queue = None
        if self._loaded_versions is not None:
            self._versions = {int(v): t.to(context.state.device) for v, t in self._loaded_versions.items()}
            self._loaded_versions = None

    # ------------------------------------------------------------------ planning
    def schedule(self, round_idx: int) -> Participation:
        """Run the clock to the next server update; its buffered clients train in this epoch."""
        queue, dm = self._queue, self._dm
        if queue is None or dm is None:
            raise FederatedRuntimeError("FedBuff plans rounds only during a fit")
        if round_idx == queue.version - 1:
            # Lightning re-plans the last round of a checkpoint saved after its batches (it runs none of them again)
            return Participation(np.sort(np.array([c for c, _ in self.last_updates], dtype=np.int64)))
        if queue.version != round_idx:
            raise FederatedRuntimeError(
                f"FedBuff's queue is at server update {queue.version} but round {round_idx} was planned; rounds must "
                "be planned in order (was the train loader reused across rounds?)"
            )
        self._clock_before, self._current = queue.now, queue.version
        self._runs = queue.next_update(self._duration)
        if self._current in queue.referenced_versions() and self._current not in self._versions:
            self._versions[self._current] = self.context.state.flat.detach().clone()
        self._client_versions = {run.client_id: run.version for run in self._runs}
        return Participation(np.sort(np.array(list(self._client_versions), dtype=np.int64)))

    def _duration(self, client_id: int, draw: int) -> float:
        """Simulated seconds of one client's round (download, full local work, upload)."""
        dm, cols, (down, up) = self._dm, self.client_profiles.columns, self.payload_estimate or (0.0, 0.0)
        assert dm is not None and self.flops_per_sample is not None
        steps = step_samples(int(dm.client_sizes[client_id]), dm.batch_size, dm.local_epochs, dm.drop_last)
        samples = float(steps.sum())
        z = np.random.default_rng(derive_seed(self._base_seed(), "fedbuff", "jitter", draw)).standard_normal()
        speed = cols["flops_per_second"][client_id] * np.exp(cols["speed_jitter"][client_id] * z)
        return float(ClientTimes(transfer_seconds(down, cols["downlink_bytes_per_second"][client_id]),
                                 step_seconds(self.flops_per_sample, samples, speed),
                                 transfer_seconds(up, cols["uplink_bytes_per_second"][client_id])).finish)

    # ------------------------------------------------------------------ clients
    @override
    def client_start_weights(self, round_idx: int, client_id: int) -> torch.Tensor | None:
        version = self._client_versions.get(client_id, self._current)
        return None if version == self._current else self._versions[version]

    @override
    @torch.no_grad()
    def on_client_update(self, client: ClientContext, update: torch.Tensor, views: list[torch.Tensor]) -> None:
        weight = staleness_weight(self._current - self._client_versions[client.client_id], self.staleness,
                                  self.staleness_exponent)
        if weight != 1.0:
            update.mul_(weight)

    # ------------------------------------------------------------------ round end
    @override
    def on_round_end(self, trainer: "pl.Trainer", round_context: RoundContext) -> dict[str, float]:
        queue, dm = self._queue, self._dm
        assert queue is not None and dm is not None and self.flops_per_sample is not None
        down, up = self.payload_estimate or (0.0, 0.0)
        self._update_payload_estimate(round_context)
        referenced = queue.referenced_versions()
        self._versions = {v: t for v, t in self._versions.items() if v in referenced}
        stale = np.array([self._current - run.version for run in self._runs], dtype=np.int64)
        self.last_updates = [(run.client_id, int(t)) for run, t in zip(self._runs, stale, strict=True)]
        for t in stale.tolist():
            self.staleness_counts[t] = self.staleness_counts.get(t, 0) + 1
        cols = self.client_profiles.columns
        ids = np.array([run.client_id for run in self._runs], dtype=np.int64)
        samples = np.array([step_samples(int(dm.client_sizes[c]), dm.batch_size, dm.local_epochs, dm.drop_last).sum()
                            for c in ids])
        energy = float(np.sum(self.flops_per_sample * samples * cols["joules_per_flop"][ids]
                              + (down + up) * cols["joules_per_byte"][ids]))
        seconds = queue.now - self._clock_before
        self.sim_seconds_total += seconds
        self.energy_joules_total += energy
        self.network_bytes_total += (down + up) * len(ids)
        for logger in trainer.loggers:
            if isinstance(logger, both(TensorBoardLogger)) and trainer.is_global_zero and len(stale):
                logger.experiment.add_histogram("fl/staleness", stale, global_step=round_context.round_idx)
        metrics = {
            "fl/sim_seconds": seconds,
            "fl/sim_seconds_total": self.sim_seconds_total,
            "fl/staleness_mean": float(stale.mean()) if len(stale) else 0.0,
            "fl/staleness_max": float(stale.max()) if len(stale) else 0.0,
            "fl/energy_joules": energy,
            "fl/energy_joules_total": self.energy_joules_total,
            "fl/sim_bytes": (down + up) * len(ids),
            "fl/sim_bytes_total": self.network_bytes_total,
        }
        self.history.append(metrics)
        return metrics

    # ------------------------------------------------------------------ checkpoints
    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        queue = self._queue
        state["queue"] = queue.state_dict() if queue is not None else self._loaded_queue
        state["versions"] = {v: t.detach().cpu().clone() for v, t in self._versions.items()}
        state["staleness_counts"] = dict(self.staleness_counts)
        state["last_updates"] = list(self.last_updates)
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.staleness_counts = {int(k): int(v) for k, v in state_dict["staleness_counts"].items()}
        self.last_updates = [(int(c), int(t)) for c, t in state_dict["last_updates"]]
        self._loaded_queue = state_dict["queue"]
        self._loaded_versions = dict(state_dict["versions"])
