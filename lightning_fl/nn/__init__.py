"""Neural-network building blocks: reference models, Federated Dropout submodels."""

from lightning_fl.nn.dropout_groups import DropoutGroup, TensorSlice, find_dropout_groups
from lightning_fl.nn.models import MLP, SmallCNN
from lightning_fl.nn.submodel import ShrunkModule, SubmodelPlan

__all__ = ["MLP", "DropoutGroup", "ShrunkModule", "SmallCNN", "SubmodelPlan", "TensorSlice", "find_dropout_groups"]
