"""FedMRN: clients learn a 1-bit mask over seeded noise (callback and the weight parametrization)."""

from lightning_fl.algorithms.fedmrn.callback import MaskedRandomNoise
from lightning_fl.algorithms.fedmrn.parametrization import MaskedNoise

__all__ = ["MaskedNoise", "MaskedRandomNoise"]
