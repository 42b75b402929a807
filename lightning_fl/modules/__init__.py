"""Ready-made LightningModules."""

from lightning_fl.modules.classifier import ClassifierModule

__all__ = ["ClassifierModule"]
