"""Neural-network building blocks: reference models."""

from lightning_fl.nn.models import MLP, SmallCNN

__all__ = ["MLP", "SmallCNN"]
