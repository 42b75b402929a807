"""Simulated devices: client profiles, the simulated clock, deadlines, energy, and FedBuff's asynchronous queue.

Pure logic in ``asynchronous``, ``clock``, ``flops``, ``profiles`` and ``rounds`` (usable without Lightning); the
callbacks :class:`SimulatedDevices`, :class:`SystemsSimulation` and :class:`FedBuff` run it inside a federated fit.
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
from lightning_fl.systems.devices import SimulatedDevices
from lightning_fl.systems.fedbuff import FedBuff
from lightning_fl.systems.flops import training_flops_per_sample
from lightning_fl.systems.profiles import PRESETS, ClientProfile, ClientProfiles, Distribution, resolve_profiles
from lightning_fl.systems.rounds import RoundRules, RoundSchedule, RoundWorkload, plan_round
from lightning_fl.systems.simulation import SystemsSimulation

__all__ = [
    "PRESETS",
    "BufferedAsyncSchedule",
    "ClientProfile",
    "ClientProfiles",
    "ClientRun",
    "ClientTimes",
    "DeadlineOutcome",
    "Distribution",
    "FedBuff",
    "RoundRules",
    "RoundSchedule",
    "RoundWorkload",
    "SimulatedDevices",
    "SystemsSimulation",
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
