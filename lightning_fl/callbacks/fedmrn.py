"""Compatibility: moved to :mod:`lightning_fl.algorithms.fedmrn`."""

from lightning_fl.algorithms.fedmrn.callback import MaskedRandomNoise

__all__ = ["MaskedRandomNoise"]
