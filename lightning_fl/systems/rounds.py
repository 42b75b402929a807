"""One synchronous round of simulated devices: who is available, who is selected, how much each does, who reports.

Every decision derives from ``(seed, round_idx)`` alone (and the profiles, the partition and the payload
estimates, identical on every rank), so every rank plans the same round and a resumed run plans the same rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lightning_fl.datamodules.plan import ClientSampling, Participation, sample_clients
from lightning_fl.seeding import derive_seed
from lightning_fl.systems.clock import (
    ClientTimes,
    apply_deadline,
    energy_joules,
    step_samples,
    step_seconds,
    steps_within,
    transfer_seconds,
)
from lightning_fl.systems.profiles import ClientProfiles

StragglerPolicy = Literal["drop", "partial"]
Selection = Literal["random", "capable"]


@dataclass(frozen=True)
class RoundRules:
    """How rounds are run (see :class:`~lightning_fl.systems.SystemsSimulation` for the meaning of each)."""

    deadline: float | None = None
    stragglers: StragglerPolicy = "drop"
    over_selection: float = 0.0
    dynamic_work: bool = False
    min_local_steps: int = 1
    selection: Selection = "random"
    failures: bool = True


@dataclass(frozen=True)
class RoundWorkload:
    """What the data module and the model make a round cost (identical on every rank)."""

    sizes: np.ndarray
    batch_size: int
    local_epochs: int
    clients_per_round: int
    client_sampling: ClientSampling
    sampling_seed: int
    flops_per_sample: float
    downlink_bytes: float
    uplink_bytes: float
    drop_last: bool = False


@dataclass(frozen=True)
class RoundSchedule:
    """The simulated outcome of one round.

    Attributes:
        round_idx: The round.
        clients: Clients whose update is used, sorted (they train).
        local_steps: Local steps of each of ``clients`` (aligned).
        selected: Clients selected (available ones, over-selection included), sorted.
        finish_seconds: When each selected client delivers its work, partial work cut at the deadline (aligned
            with ``selected``).
        available: Clients available this round.
        stragglers: Selected clients that would miss the deadline with their planned work.
        dropped: Stragglers whose work is not used (all of them with ``"drop"``; with ``"partial"``, those that
            cannot finish even one step in time).
        failed: Selected clients that failed during the round.
        discarded: Over-selected clients that finished in time but after the first ``clients_per_round``.
        round_seconds: Simulated duration of the round.
        energy_joules: Energy every selected client spent (failed, dropped and discarded work included).
        network_bytes: Bytes moved over the simulated network, wasted downloads included.
    """

    round_idx: int
    clients: np.ndarray
    local_steps: np.ndarray
    selected: np.ndarray
    finish_seconds: np.ndarray
    available: int
    stragglers: int
    dropped: int
    failed: int
    discarded: int
    round_seconds: float
    energy_joules: float
    network_bytes: float

    @property
    def participation(self) -> Participation:
        """The round's clients and local steps, for the data module's plan."""
        return Participation(self.clients, self.local_steps)


def _sample_subset(round_idx: int, subset: np.ndarray, work: RoundWorkload, m: int, seed: int) -> np.ndarray:
    """``m`` clients of ``subset``: exactly the data module's own sampling when the subset is every client and ``m``
    is ``clients_per_round``; otherwise the same rule over the subset from the round's own seed."""
    n = len(work.sizes)
    if work.client_sampling == "all" or m >= len(subset):
        return np.sort(subset)
    if len(subset) == n and m == work.clients_per_round:
        return sample_clients(round_idx, work.sizes, m, work.client_sampling, work.sampling_seed)
    pos = sample_clients(round_idx, work.sizes[subset], m, work.client_sampling, derive_seed(seed, "systems", "sample"))
    return np.sort(subset[pos])


def plan_round(round_idx: int, seed: int, profiles: ClientProfiles, work: RoundWorkload,
               rules: RoundRules) -> RoundSchedule:
    """Simulate one synchronous round (see :class:`~lightning_fl.systems.SystemsSimulation`)."""
    cols = profiles.columns
    n = len(work.sizes)
    available = np.random.default_rng(derive_seed(seed, "systems", "available", round_idx)).random(n) < \
        cols["availability"]
    avail_ids = np.flatnonzero(available)
    keep = n if work.client_sampling == "all" else work.clients_per_round
    m = min(len(avail_ids), keep if rules.over_selection == 0 else math.ceil(keep * (1 + rules.over_selection)))
    steps = {
        int(c): step_samples(int(work.sizes[c]), work.batch_size, work.local_epochs, work.drop_last) for c in avail_ids
    }
    download = transfer_seconds(work.downlink_bytes, cols["downlink_bytes_per_second"])
    upload = transfer_seconds(work.uplink_bytes, cols["uplink_bytes_per_second"])

    def nominal_plan(c: int) -> tuple[int, float]:
        """Planned steps and nominal finish (profile speed, no jitter)."""
        seconds = step_seconds(work.flops_per_sample, steps[c], cols["flops_per_second"][c])
        tau = len(seconds)
        if rules.dynamic_work and rules.deadline is not None:
            fit = steps_within(rules.deadline - download[c] - upload[c], seconds)
            tau = min(max(fit, rules.min_local_steps), tau)
        return tau, float(ClientTimes(download[c], seconds[:tau].sum(), upload[c]).finish)

    planned = {int(c): nominal_plan(int(c)) for c in avail_ids}
    if rules.selection == "capable" and rules.deadline is not None:
        deadline = rules.deadline
        capable = np.array([c for c in avail_ids if planned[int(c)][1] <= deadline], dtype=np.int64)
        if len(capable) >= m:
            selected = _sample_subset(round_idx, capable, work, m, seed)
        else:
            rest = [int(c) for c in avail_ids if planned[int(c)][1] > deadline]
            rest.sort(key=lambda c: (planned[c][1], c))
            selected = np.sort(np.concatenate([capable, np.array(rest[: m - len(capable)], dtype=np.int64)]))
    else:
        selected = _sample_subset(round_idx, avail_ids, work, m, seed)

    jitter = np.random.default_rng(derive_seed(seed, "systems", "jitter", round_idx)).standard_normal(n)
    speed = cols["flops_per_second"] * np.exp(cols["speed_jitter"] * jitter)
    fail_rng = np.random.default_rng(derive_seed(seed, "systems", "fail", round_idx))
    fail_draw, fail_point = fail_rng.random(n), fail_rng.random(n)
    k = len(selected)
    taus = np.array([planned[int(c)][0] for c in selected], dtype=np.int64)
    client_steps = [step_seconds(work.flops_per_sample, steps[int(c)], speed[c]) for c in selected]
    compute = np.array([s[:t].sum() for s, t in zip(client_steps, taus, strict=True)])
    finish = ClientTimes(download[selected], compute, upload[selected]).finish
    failed = (fail_draw[selected] < cols["failure_probability"][selected]) if rules.failures else np.zeros(k, bool)
    failure_seconds = download[selected] + fail_point[selected] * compute
    late = ~failed & (finish > rules.deadline) if rules.deadline is not None else np.zeros(k, bool)
    used_taus, used_finish = taus.copy(), finish.copy()
    if rules.stragglers == "partial" and rules.deadline is not None:
        for i in np.flatnonzero(late).tolist():
            c = int(selected[i])
            fit = min(steps_within(rules.deadline - download[c] - upload[c], client_steps[i]), int(taus[i]))
            if fit >= 1:
                used_taus[i] = fit
                used_finish[i] = ClientTimes(download[c], client_steps[i][:fit].sum(), upload[c]).finish
    keep_first = keep if rules.over_selection > 0 else None
    outcome = apply_deadline(used_finish, rules.deadline, keep_first, failed, failure_seconds)
    round_seconds = outcome.round_seconds if k else float(rules.deadline or 0.0)

    # energy and bytes of every selected client, wasted work included
    flops = np.zeros(k)
    moved = np.full(k, float(work.downlink_bytes))
    for i, client in enumerate(selected.tolist()):
        if failed[i]:
            flops[i] = fail_point[client] * compute[i] * speed[client]
        elif outcome.stragglers[i]:  # stopped at the deadline, nothing uploaded
            assert rules.deadline is not None
            flops[i] = min(max(rules.deadline - download[client], 0.0), compute[i]) * speed[client]
        else:
            flops[i] = work.flops_per_sample * float(steps[client][: used_taus[i]].sum())
            moved[i] += work.uplink_bytes
    energy = energy_joules(flops, moved, cols["joules_per_flop"][selected], cols["joules_per_byte"][selected])
    kept = outcome.kept
    return RoundSchedule(
        round_idx=round_idx,
        clients=selected[kept],
        local_steps=used_taus[kept],
        selected=selected,
        finish_seconds=used_finish,
        available=len(avail_ids),
        stragglers=int(late.sum()),
        dropped=int(outcome.stragglers.sum()),
        failed=int(failed.sum()),
        discarded=int(outcome.discarded.sum()),
        round_seconds=round_seconds,
        energy_joules=float(energy.sum()),
        network_bytes=float(moved.sum()),
    )
