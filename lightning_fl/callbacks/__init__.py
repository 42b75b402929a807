"""Compatibility: the callbacks' old import path. They live in :mod:`lightning_fl.federation` (the runtime),
:mod:`lightning_fl.algorithms` and :mod:`lightning_fl.systems`."""

from lightning_fl.algorithms import (
    DifferentialPrivacy,
    FedBN,
    FederatedDropout,
    FedProx,
    MaliciousClients,
    MaskedRandomNoise,
    PersonalizedEvaluation,
    PersonalLayers,
    Scaffold,
)
from lightning_fl.federation import (
    ClientContext,
    FederatedAlgorithm,
    FederatedAveraging,
    FederatedContext,
    RoundContext,
    RoundProgressBar,
    RoundStats,
)
from lightning_fl.systems import FedBuff, SimulatedDevices, SystemsSimulation

__all__ = [
    "ClientContext",
    "DifferentialPrivacy",
    "FedBN",
    "FedBuff",
    "FedProx",
    "FederatedAlgorithm",
    "FederatedAveraging",
    "FederatedContext",
    "FederatedDropout",
    "MaliciousClients",
    "MaskedRandomNoise",
    "PersonalLayers",
    "PersonalizedEvaluation",
    "RoundContext",
    "RoundProgressBar",
    "RoundStats",
    "Scaffold",
    "SimulatedDevices",
    "SystemsSimulation",
]
