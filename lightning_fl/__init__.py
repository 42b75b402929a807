"""lightning-fl: communication- and resource-efficient federated learning inside PyTorch Lightning."""

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
from lightning_fl.datamodules import FederatedDataModule
from lightning_fl.exceptions import CheckpointError, FederatedConfigError, FederatedRuntimeError, PayloadError
from lightning_fl.federation import FederatedAlgorithm, FederatedAveraging, RoundProgressBar
from lightning_fl.gkt import FedGKTModule
from lightning_fl.modules import ClassifierModule
from lightning_fl.strategies import FederatedDDPStrategy
from lightning_fl.systems import FedBuff, SystemsSimulation
from lightning_fl.trainer import federated_trainer_defaults

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ClassifierModule",
    "DifferentialPrivacy",
    "FedBN",
    "FedBuff",
    "FedGKTModule",
    "FedProx",
    "FederatedAlgorithm",
    "FederatedAveraging",
    "FederatedConfigError",
    "FederatedDDPStrategy",
    "FederatedDataModule",
    "FederatedDropout",
    "FederatedRuntimeError",
    "MaliciousClients",
    "MaskedRandomNoise",
    "PayloadError",
    "PersonalLayers",
    "PersonalizedEvaluation",
    "RoundProgressBar",
    "Scaffold",
    "SystemsSimulation",
    "federated_trainer_defaults",
]
