"""Neural-network building blocks: reference models.

The Federated Dropout names (``DropoutGroup``, ``TensorSlice``, ``find_dropout_groups``, ``ShrunkModule``,
``SubmodelPlan``) moved to :mod:`lightning_fl.algorithms.federated_dropout`; they stay importable from here,
imported on first use so that this package does not import the algorithms.
"""

from __future__ import annotations

import importlib
from typing import Any

from lightning_fl.nn.models import MLP, SmallCNN

_MOVED = {
    "DropoutGroup": "lightning_fl.algorithms.federated_dropout.groups",
    "TensorSlice": "lightning_fl.algorithms.federated_dropout.groups",
    "find_dropout_groups": "lightning_fl.algorithms.federated_dropout.groups",
    "ShrunkModule": "lightning_fl.algorithms.federated_dropout.submodel",
    "SubmodelPlan": "lightning_fl.algorithms.federated_dropout.submodel",
}

__all__ = ["MLP", "DropoutGroup", "ShrunkModule", "SmallCNN", "SubmodelPlan", "TensorSlice", "find_dropout_groups"]


def __getattr__(name: str) -> Any:
    """Moved names, imported from their new home on first use (PEP 562)."""
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
