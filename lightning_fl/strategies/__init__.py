"""Strategies for running a round's clients on several devices."""

from pytorch_lightning.strategies import StrategyRegistry

from lightning_fl.namespaces import lightning_pytorch
from lightning_fl.strategies.federated_ddp import FederatedDDPStrategy

FederatedDDPStrategy.register_strategies(StrategyRegistry)

#: The federated strategies of both namespaces (the unified package's when it is installed).
FEDERATED_STRATEGIES: tuple[type, ...] = (FederatedDDPStrategy,)
if lightning_pytorch is not None:
    from lightning_fl.strategies.unified import FederatedDDPStrategy as _UnifiedFederatedDDPStrategy

    _UnifiedFederatedDDPStrategy.register_strategies(lightning_pytorch.strategies.StrategyRegistry)
    FEDERATED_STRATEGIES += (_UnifiedFederatedDDPStrategy,)

__all__ = ["FEDERATED_STRATEGIES", "FederatedDDPStrategy"]
