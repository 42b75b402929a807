"""Simulated devices: client profiles, the simulated clock, deadlines, energy, and FedBuff's asynchronous queue.

Pure logic, usable without Lightning; the callbacks :class:`~lightning_fl.callbacks.SystemsSimulation` and
:class:`~lightning_fl.callbacks.FedBuff` run it inside a federated fit.
"""

from lightning_fl.systems.asynchronous import BufferedAsyncSchedule, ClientRun, staleness_weight
from lightning_fl.systems.clock import (
    ClientTimes,
    DeadlineOutcome,
    apply_deadline,
    client_times,
    energy_joules,
    fednova_scales,
    step_samples,
    steps_within,
)
from lightning_fl.systems.flops import training_flops_per_sample
from lightning_fl.systems.profiles import PRESETS, ClientProfile, ClientProfiles, Distribution, resolve_profiles
from lightning_fl.systems.rounds import RoundRules, RoundSchedule, RoundWorkload, plan_round

__all__ = [
    "PRESETS",
    "BufferedAsyncSchedule",
    "ClientProfile",
    "ClientProfiles",
    "ClientRun",
    "ClientTimes",
    "DeadlineOutcome",
    "Distribution",
    "RoundRules",
    "RoundSchedule",
    "RoundWorkload",
    "apply_deadline",
    "client_times",
    "energy_joules",
    "fednova_scales",
    "plan_round",
    "resolve_profiles",
    "staleness_weight",
    "step_samples",
    "steps_within",
    "training_flops_per_sample",
]
