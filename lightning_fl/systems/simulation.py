"""Heterogeneous, unreliable clients in synchronous rounds: a simulated clock, deadlines, dynamic work, energy."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from typing_extensions import override

from lightning_fl.checks import check_bool, check_choice, check_int, check_non_negative, check_positive
from lightning_fl.datamodules.plan import Participation
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.algorithm import ClientContext, RoundContext
from lightning_fl.systems.clock import fednova_scales
from lightning_fl.systems.devices import SimulatedDevices
from lightning_fl.systems.profiles import ClientProfiles
from lightning_fl.systems.rounds import (
    RoundRules,
    RoundSchedule,
    RoundWorkload,
    Selection,
    StragglerPolicy,
    plan_round,
)


class SystemsSimulation(SimulatedDevices):
    """Simulated devices for synchronous rounds: who is available, who finishes by the deadline, what it costs.

    Before each round trains (on every rank, from ``(seed, round_idx)``) the simulation:

    1. draws which clients are **available** (probability ``availability`` of each profile); unavailable clients
       are never selected;
    2. **selects** ``clients_per_round`` of them as the data module would (``"uniform"``, ``"size"`` or ``"all"``;
       exactly its own sample when every client is available), or ``ceil((1 + over_selection) * clients_per_round)``
       with **over-selection**; ``selection="capable"`` samples only clients expected to meet the deadline (filled
       up with the fastest others when there are too few);
    3. plans each client's **local steps**: all of its batches, or with ``dynamic_work`` as many as fit in the
       deadline at its nominal speed (at least ``min_local_steps``);
    4. runs the **clock** (``lightning_fl.systems.clock``): download = downlink bytes / downlink bytes per second,
       training = FLOPs per sample x samples of the planned steps / (speed x a per-round log-normal jitter of
       ``speed_jitter``), upload = uplink bytes / uplink bytes per second;
    5. draws **failures** (probability ``failure_probability``; a failing client stops at a uniform point of its
       training and reports nothing);
    6. applies the **deadline**: clients that would finish after it are stragglers, dropped (``"drop"``) or, with
       ``"partial"``, their steps done by the deadline are used (dropped if not even one fits); with
       over-selection only the first ``clients_per_round`` to finish are kept.

    Only the clients whose update is used train (dropped, failed and surplus clients are simulated, not run); each
    trains its planned steps (the first batches of its local epochs). A round in which nobody reports runs one
    padding batch and the server callback keeps the global model, with a warning. With ``fednova`` each update is
    multiplied by ``tau_eff / tau_i`` (FedNova, Wang et al. 2020, for client SGD without momentum: ``tau_i`` local
    steps, ``tau_eff`` their mean weighted by sample count), so that unequal local work does not bias the average;
    with equal steps it is exactly FedAvg.

    The simulated round lasts until the server has what it waits for: the ``clients_per_round``-th finish under
    over-selection, else the deadline when a straggler is still running at it, else the last finish or failure (a
    failure is noticed when it happens: the connection drops). Energy per
    client is ``joules_per_flop`` x FLOPs done + ``joules_per_byte`` x bytes received and sent (failed and dropped
    clients count their download and the training done before they stopped; surplus clients their whole round).

    Logged with the round's scalars: ``fl/sim_seconds``, ``fl/sim_seconds_total``, ``fl/available``,
    ``fl/selected``, ``fl/stragglers``, ``fl/dropped``, ``fl/failed``, ``fl/discarded`` (over-selection surplus),
    ``fl/mean_local_steps``, ``fl/energy_joules``, ``fl/energy_joules_total``, ``fl/sim_bytes`` and
    ``fl/sim_bytes_total`` (every byte of the simulated network, wasted downloads included; ``fl/downlink_bytes``
    counts only the clients that trained). One process or several (every rank plans the same round).

    Args:
        profiles: A preset (``"phones"``, ``"edge"``, ``"uniform"``, ``"homogeneous"``), a ``.csv``/``.json`` file
            with one row per client, or :class:`~lightning_fl.systems.ClientProfiles`.
        deadline: Simulated seconds per round (``None``: the server waits for everyone).
        stragglers: ``"drop"`` or ``"partial"`` (needs a deadline).
        over_selection: Extra fraction of clients selected, >= 0 (0.3: 13 selected to keep the first 10).
        dynamic_work: Plan fewer local steps for slow clients so they meet the deadline (needs a deadline).
        min_local_steps: Fewest steps ``dynamic_work`` plans, >= 1.
        selection: ``"random"`` or ``"capable"`` (needs a deadline).
        failures: Simulate the profiles' failure probabilities.
        fednova: Normalize updates by local steps (FedNova).
        flops_per_sample: Training FLOPs per sample; ``None`` counts them once before the first round (on a
            client's submodel under Federated Dropout).
        seed: Seed of the simulation; ``None`` takes the server callback's (else the data module's).

    Raises:
        FederatedConfigError: On an argument out of range or a rule that needs a deadline without one.

    Example:
        >>> SystemsSimulation(profiles="phones", deadline=30.0, over_selection=0.3).deadline
        30.0
        >>> SystemsSimulation(dynamic_work=True)
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.FederatedConfigError: dynamic_work=True needs a deadline, got deadline=None
    """

    def __init__(
        self,
        profiles: ClientProfiles | str = "phones",
        deadline: float | None = None,
        stragglers: StragglerPolicy = "drop",
        over_selection: float = 0.0,
        dynamic_work: bool = False,
        min_local_steps: int = 1,
        selection: Selection = "random",
        failures: bool = True,
        fednova: bool = False,
        flops_per_sample: float | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(profiles, flops_per_sample, seed)
        self.deadline = None if deadline is None else check_positive("deadline", deadline)
        check_choice("stragglers", stragglers, ("drop", "partial"))
        check_non_negative("over_selection", over_selection)
        check_int("min_local_steps", min_local_steps, low=1)
        check_choice("selection", selection, ("random", "capable"))
        for name, flag in (("dynamic_work", dynamic_work), ("failures", failures), ("fednova", fednova)):
            check_bool(name, flag)
        for name, needs in (("stragglers='partial'", stragglers == "partial"), ("dynamic_work=True", dynamic_work),
                            ("selection='capable'", selection == "capable")):
            if needs and deadline is None:
                raise FederatedConfigError(f"{name} needs a deadline, got deadline=None")
        self.rules = RoundRules(
            deadline=self.deadline, stragglers=stragglers, over_selection=float(over_selection),
            dynamic_work=bool(dynamic_work), min_local_steps=min_local_steps, selection=selection,
            failures=bool(failures),
        )
        self.fednova = bool(fednova)
        self.last_schedule: RoundSchedule | None = None
        self._scales: dict[int, float] = {}

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        super().on_fit_start(trainer, pl_module)
        dm = self._dm
        assert dm is not None
        if self.rules.over_selection > 0 and dm.client_sampling == "all":
            raise FederatedConfigError(
                f"over_selection={self.rules.over_selection} needs a sampled subset of clients, got the data "
                "module's client_sampling='all'"
            )

    # ------------------------------------------------------------------ planning
    def schedule(self, round_idx: int) -> Participation:
        """Simulate ``round_idx`` (:func:`~lightning_fl.systems.plan_round`) and keep its outcome."""
        dm = self._dm
        assert dm is not None and self.flops_per_sample is not None and self.payload_estimate is not None
        work = RoundWorkload(
            sizes=dm.client_sizes, batch_size=dm.batch_size, local_epochs=dm.local_epochs,
            clients_per_round=dm.clients_per_round, client_sampling=dm.client_sampling, sampling_seed=dm.seed,
            flops_per_sample=self.flops_per_sample, downlink_bytes=self.payload_estimate[0],
            uplink_bytes=self.payload_estimate[1], drop_last=dm.drop_last,
        )
        schedule = plan_round(round_idx, self._base_seed(), self.client_profiles, work, self.rules)
        self.last_schedule = schedule
        scales = np.ones(len(schedule.clients))
        if self.fednova:
            scales = fednova_scales(schedule.local_steps, dm.client_sizes[schedule.clients])
        self._scales = {int(c): float(s) for c, s in zip(schedule.clients, scales, strict=True)}
        return schedule.participation

    # ------------------------------------------------------------------ round
    @override
    @torch.no_grad()
    def on_client_update(self, client: ClientContext, update: torch.Tensor, views: list[torch.Tensor]) -> None:
        scale = self._scales.get(client.client_id, 1.0)
        if scale != 1.0:
            update.mul_(scale)

    @override
    def on_round_end(self, trainer: "pl.Trainer", round_context: RoundContext) -> dict[str, float]:
        schedule = self.last_schedule
        assert schedule is not None and schedule.round_idx == round_context.round_idx
        self._update_payload_estimate(round_context)
        self.sim_seconds_total += schedule.round_seconds
        self.energy_joules_total += schedule.energy_joules
        self.network_bytes_total += schedule.network_bytes
        metrics = {
            "fl/sim_seconds": schedule.round_seconds,
            "fl/sim_seconds_total": self.sim_seconds_total,
            "fl/available": float(schedule.available),
            "fl/selected": float(len(schedule.selected)),
            "fl/stragglers": float(schedule.stragglers),
            "fl/dropped": float(schedule.dropped),
            "fl/failed": float(schedule.failed),
            "fl/discarded": float(schedule.discarded),
            "fl/mean_local_steps": float(schedule.local_steps.mean()) if len(schedule.clients) else 0.0,
            "fl/energy_joules": schedule.energy_joules,
            "fl/energy_joules_total": self.energy_joules_total,
            "fl/sim_bytes": schedule.network_bytes,
            "fl/sim_bytes_total": self.network_bytes_total,
        }
        self.history.append(metrics)
        return metrics
