"""Callbacks: the server's side of federated training, plugged into Lightning's Trainer."""

from lightning_fl.callbacks.algorithm import ClientContext, FederatedAlgorithm, FederatedContext, RoundContext
from lightning_fl.callbacks.fedavg import FederatedAveraging
from lightning_fl.callbacks.fedbuff import FedBuff
from lightning_fl.callbacks.federated_dropout import FederatedDropout
from lightning_fl.callbacks.fedmrn import MaskedRandomNoise
from lightning_fl.callbacks.fedprox import FedProx
from lightning_fl.callbacks.malicious import MaliciousClients
from lightning_fl.callbacks.personal import FedBN, PersonalLayers
from lightning_fl.callbacks.personal_eval import PersonalizedEvaluation
from lightning_fl.callbacks.privacy import DifferentialPrivacy
from lightning_fl.callbacks.progress import RoundProgressBar
from lightning_fl.callbacks.round_log import RoundStats
from lightning_fl.callbacks.scaffold import Scaffold
from lightning_fl.callbacks.simulated_devices import SimulatedDevices
from lightning_fl.callbacks.systems import SystemsSimulation

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
