""":class:`FederatedDDPStrategy` for the unified package's ``lightning.pytorch.Trainer``.

A strategy's own code checks that the module is its namespace's ``LightningModule``, so one class cannot serve both
namespaces (callbacks and the data module can: :mod:`lightning_fl.namespaces`). ``strategy="federated_ddp"`` picks
this class in a ``lightning.pytorch.Trainer`` and :class:`lightning_fl.FederatedDDPStrategy` in a
``pytorch_lightning.Trainer``. Importing this module needs the ``lightning`` package.
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy

from lightning_fl.strategies.federated_ddp import FederatedDDPBehaviour


class FederatedDDPStrategy(FederatedDDPBehaviour, DDPStrategy):
    """lightning_fl's federated DDP strategy (:class:`lightning_fl.FederatedDDPStrategy`), built on
    ``lightning.pytorch``: one process per device, each training its own share of a round's clients, the module
    never wrapped in ``DistributedDataParallel``.

    Example:
        >>> import lightning.pytorch as L
        >>> trainer = L.Trainer(accelerator="cpu", devices=2, strategy="federated_ddp", logger=False)
        >>> type(trainer.strategy).__module__
        'lightning_fl.strategies.unified'
    """
