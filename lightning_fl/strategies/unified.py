""":class:`FederatedDDPStrategy` for the unified package's ``lightning.pytorch.Trainer``.

A strategy's own code checks that the module is its namespace's ``LightningModule``, so one class cannot serve both
namespaces (callbacks and the data module can: :mod:`lightning_fl.namespaces`). ``strategy="federated_ddp"`` picks
this class in a ``lightning.pytorch.Trainer`` and :class:`lightning_fl.FederatedDDPStrategy` in a
``pytorch_lightning.Trainer``. Importing this module needs the ``lightning`` package.
"""

from __future__ import annotations

import torch
from lightning.fabric.strategies.registry import _StrategyRegistry
from lightning.pytorch.strategies import DDPStrategy
from typing_extensions import override

from lightning_fl.strategies.federated_ddp import broadcast_initial_weights, close_spawned_group, register_federated_ddp


class FederatedDDPStrategy(DDPStrategy):
    """lightning_fl's federated DDP strategy (:class:`lightning_fl.FederatedDDPStrategy`), built on
    ``lightning.pytorch``: one process per device, each training its own share of a round's clients, the module
    never wrapped in ``DistributedDataParallel``.

    Example:
        >>> import lightning.pytorch as L
        >>> trainer = L.Trainer(accelerator="cpu", devices=2, strategy="federated_ddp", logger=False)
        >>> type(trainer.strategy).__module__
        'lightning_fl.strategies.unified'
    """

    strategy_name = "federated_ddp"

    @override
    def configure_ddp(self) -> None:
        assert isinstance(self.model, torch.nn.Module)
        broadcast_initial_weights(self.model)

    @override
    def teardown(self) -> None:
        super().teardown()
        close_spawned_group(self._start_method)

    @classmethod
    @override
    def register_strategies(cls, strategy_registry: _StrategyRegistry) -> None:
        register_federated_ddp(cls, strategy_registry)
