"""What the server does with the clients' updates: aggregation and server optimizers.

``ClientStore``, ``FlatState`` and ``TensorSpec`` moved to :mod:`lightning_fl.federation`; they stay importable
from here, imported on first use so that this package does not import the runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

from lightning_fl.server.aggregator import Aggregator, WeightedMeanAggregator
from lightning_fl.server.optimizers import ServerAdagrad, ServerAdam, ServerOptimizer, ServerSGD, ServerYogi
from lightning_fl.server.robust import CoordinateMedianAggregator, NormClippingAggregator, TrimmedMeanAggregator

_MOVED = {
    "ClientStore": "lightning_fl.federation.client_store",
    "FlatState": "lightning_fl.federation.flat",
    "TensorSpec": "lightning_fl.federation.flat",
}

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


def __getattr__(name: str) -> Any:
    """Moved names, imported from their new home on first use (PEP 562)."""
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
