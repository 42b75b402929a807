"""The round runtime: the server callback (host), the round's client and server steps, exchange and flat state.

Algorithms (:mod:`lightning_fl.algorithms`) and simulated devices (:mod:`lightning_fl.systems`) plug into it through
:class:`FederatedAlgorithm`; this package imports neither.
"""

from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.context import ClientContext, FederatedContext, RoundContext
from lightning_fl.federation.host import FederatedAveraging
from lightning_fl.federation.progress import RoundProgressBar
from lightning_fl.federation.round_log import RoundStats

__all__ = [
    "ClientContext",
    "FederatedAlgorithm",
    "FederatedAveraging",
    "FederatedContext",
    "RoundContext",
    "RoundProgressBar",
    "RoundStats",
]
