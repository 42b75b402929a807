"""Algorithm plug-ins of the round runtime: each is a :class:`~lightning_fl.federation.FederatedAlgorithm`."""

from lightning_fl.algorithms.federated_dropout import FederatedDropout
from lightning_fl.algorithms.fedmrn import MaskedRandomNoise
from lightning_fl.algorithms.fedprox import FedProx
from lightning_fl.algorithms.malicious import MaliciousClients
from lightning_fl.algorithms.personal import FedBN, PersonalLayers
from lightning_fl.algorithms.personal_eval import PersonalizedEvaluation
from lightning_fl.algorithms.privacy import DifferentialPrivacy
from lightning_fl.algorithms.scaffold import Scaffold

__all__ = [
    "DifferentialPrivacy",
    "FedBN",
    "FedProx",
    "FederatedDropout",
    "MaliciousClients",
    "MaskedRandomNoise",
    "PersonalLayers",
    "PersonalizedEvaluation",
    "Scaffold",
]
