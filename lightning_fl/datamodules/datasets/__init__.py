"""Dataset sources: configurable recipes that load train, validation and test data into memory.

Each source has a typed ``__init__`` (so LightningCLI builds it from YAML through ``class_path``) and a
``load()`` that returns :class:`Splits`. :func:`get_source` builds one from a short name.
"""

from __future__ import annotations

from typing import Any

from lightning_fl.datamodules.datasets.base import DatasetSource, InMemoryDataset, Splits
from lightning_fl.datamodules.datasets.digits import Digits, load_digits_dataset
from lightning_fl.datamodules.datasets.leaf import LeafDataset
from lightning_fl.datamodules.datasets.synthetic import FedProxSynthetic
from lightning_fl.datamodules.datasets.vision import VISION_CLASSES, TorchvisionDataset
from lightning_fl.exceptions import FederatedConfigError

__all__ = [
    "SOURCE_NAMES",
    "DatasetSource",
    "Digits",
    "FedProxSynthetic",
    "InMemoryDataset",
    "LeafDataset",
    "Splits",
    "TorchvisionDataset",
    "get_source",
    "load_digits_dataset",
]

SOURCE_NAMES = ("digits", *VISION_CLASSES, "synthetic", "leaf")
"""Names :func:`get_source` knows."""


def get_source(name: str, /, **kwargs: Any) -> DatasetSource:
    """Build a dataset source from a short name and its constructor arguments.

    The torchvision names (``"mnist"``, ``"fashion_mnist"``, ``"emnist"``, ``"cifar10"``, ``"cifar100"``) build a
    :class:`TorchvisionDataset` with that ``name``; ``"digits"`` a :class:`Digits`, ``"synthetic"`` a
    :class:`FedProxSynthetic` and ``"leaf"`` a :class:`LeafDataset`.

    Args:
        name: One of :data:`SOURCE_NAMES` (positional-only, so that ``kwargs`` may hold a source's own ``name``,
            as in ``get_source("leaf", root="data", name="shakespeare")``).
        **kwargs: Arguments of the source's ``__init__``.

    Returns:
        The source (nothing is loaded yet).

    Raises:
        FederatedConfigError: If ``name`` is unknown.

    Example:
        >>> get_source("synthetic", alpha=0.5, beta=0.5).alpha
        0.5
        >>> get_source("mnist", root="data").name
        'mnist'
        >>> get_source("imagenet")
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.FederatedConfigError: name must be one of ['digits', 'mnist', ...], got 'imagenet'
    """
    if name == "digits":
        return Digits(**kwargs)
    if name in VISION_CLASSES:
        return TorchvisionDataset(name=name, **kwargs)
    if name == "synthetic":
        return FedProxSynthetic(**kwargs)
    if name == "leaf":
        return LeafDataset(**kwargs)
    raise FederatedConfigError(f"name must be one of {list(SOURCE_NAMES)}, got {name!r}")
