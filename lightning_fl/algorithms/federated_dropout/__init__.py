"""Federated Dropout: clients train submodels cut from the global model (callback, dropout groups, layout)."""

from lightning_fl.algorithms.federated_dropout.callback import FederatedDropout
from lightning_fl.algorithms.federated_dropout.groups import DropoutGroup, TensorSlice, find_dropout_groups
from lightning_fl.algorithms.federated_dropout.layout import ClientSubmodels, SubmodelLayout
from lightning_fl.algorithms.federated_dropout.submodel import ShrunkModule, SubmodelPlan

__all__ = [
    "ClientSubmodels",
    "DropoutGroup",
    "FederatedDropout",
    "ShrunkModule",
    "SubmodelLayout",
    "SubmodelPlan",
    "TensorSlice",
    "find_dropout_groups",
]
