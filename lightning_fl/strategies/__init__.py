"""Strategies for running a round's clients on several devices."""

from pytorch_lightning.strategies import StrategyRegistry

from lightning_fl.strategies.federated_ddp import FederatedDDPStrategy

FederatedDDPStrategy.register_strategies(StrategyRegistry)

__all__ = ["FederatedDDPStrategy"]
