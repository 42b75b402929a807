"""Callbacks: the server's side of federated training, plugged into Lightning's Trainer."""

from lightning_fl.callbacks.fedavg import FederatedAveraging
from lightning_fl.callbacks.fedprox import FedProx
from lightning_fl.callbacks.progress import RoundProgressBar
from lightning_fl.callbacks.round_log import RoundStats

__all__ = ["FedProx", "FederatedAveraging", "RoundProgressBar", "RoundStats"]
