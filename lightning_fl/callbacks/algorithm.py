"""Compatibility: moved to :mod:`lightning_fl.federation.algorithm` and :mod:`lightning_fl.federation.context`."""

from lightning_fl.federation.algorithm import FederatedAlgorithm, find_algorithms
from lightning_fl.federation.context import ClientContext, FederatedContext, RoundContext

__all__ = ["ClientContext", "FederatedAlgorithm", "FederatedContext", "RoundContext", "find_algorithms"]
