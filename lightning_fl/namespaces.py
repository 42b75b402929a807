"""Both Lightning namespaces: ``pytorch_lightning`` and, when the unified ``lightning`` package is installed,
``lightning.pytorch``.

The two namespaces hold separate copies of every class, and a Trainer of one refuses callbacks and data modules
built on the other (its ``isinstance`` checks fail). lightning-fl's callbacks and data module are built on the bases
below, which derive from both namespaces' classes when both are installed, so the same object works with a
``pytorch_lightning.Trainer`` and a ``lightning.pytorch.Trainer``. A strategy cannot be shared that way (a
strategy's own code asserts its namespace's module type), so the unified package gets its own
:class:`~lightning_fl.strategies.unified.FederatedDDPStrategy`, and ``strategy="federated_ddp"`` names the right one
in either namespace. LightningModules are the user's own, written against either namespace; lightning-fl's
modules (``ClassifierModule``, ``FedGKTModule``) are ``pytorch_lightning`` modules.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar as _PLProgressBar

T = TypeVar("T")

lightning_pytorch: ModuleType | None
try:
    import lightning.pytorch as lightning_pytorch
except ImportError:  # the unified package is optional
    lightning_pytorch = None


def both(cls: type[T]) -> tuple[type[T], ...]:
    """``cls``, a ``pytorch_lightning`` class, and, when the unified package is installed, its twin in
    ``lightning.pytorch``: for ``isinstance`` checks that must recognise either.

    Example:
        >>> from pytorch_lightning.callbacks import ModelCheckpoint
        >>> both(ModelCheckpoint)[0] is ModelCheckpoint
        True
    """
    if lightning_pytorch is None or not cls.__module__.startswith("pytorch_lightning."):
        return (cls,)
    twin_module = importlib.import_module(cls.__module__.replace("pytorch_lightning", "lightning.pytorch", 1))
    return (cls, getattr(twin_module, cls.__qualname__))


if TYPE_CHECKING or lightning_pytorch is None:
    Callback = pl.Callback
    LightningDataModule = pl.LightningDataModule
    TQDMProgressBar = _PLProgressBar
else:

    class Callback(pl.Callback, lightning_pytorch.Callback):
        """A callback of both namespaces."""

    class LightningDataModule(pl.LightningDataModule, lightning_pytorch.LightningDataModule):
        """A data module of both namespaces."""

    class TQDMProgressBar(_PLProgressBar, lightning_pytorch.callbacks.TQDMProgressBar):
        """Lightning's progress bar in both namespaces."""
