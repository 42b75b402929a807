"""What the server does with the clients' updates: flat global state, aggregation, server optimizers."""

from lightning_fl.server.aggregator import WeightedMeanAggregator
from lightning_fl.server.flat import FlatState, TensorSpec
from lightning_fl.server.optimizers import ServerAdagrad, ServerAdam, ServerOptimizer, ServerSGD, ServerYogi

__all__ = [
    "FlatState",
    "ServerAdagrad",
    "ServerAdam",
    "ServerOptimizer",
    "ServerSGD",
    "ServerYogi",
    "TensorSpec",
    "WeightedMeanAggregator",
]
