"""What the server does with the clients' updates: flat global state, aggregation, server optimizers."""

from lightning_fl.server.aggregator import Aggregator, WeightedMeanAggregator
from lightning_fl.server.client_store import ClientStore
from lightning_fl.server.flat import FlatState, TensorSpec
from lightning_fl.server.optimizers import ServerAdagrad, ServerAdam, ServerOptimizer, ServerSGD, ServerYogi
from lightning_fl.server.robust import CoordinateMedianAggregator, NormClippingAggregator, TrimmedMeanAggregator

__all__ = [
    "Aggregator",
    "ClientStore",
    "CoordinateMedianAggregator",
    "FlatState",
    "NormClippingAggregator",
    "ServerAdagrad",
    "ServerAdam",
    "ServerOptimizer",
    "ServerSGD",
    "ServerYogi",
    "TensorSpec",
    "TrimmedMeanAggregator",
    "WeightedMeanAggregator",
]
