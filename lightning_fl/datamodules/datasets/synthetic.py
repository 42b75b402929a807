"""The Synthetic(alpha, beta) benchmark of FedProx (Li et al., "Federated Optimization in Heterogeneous
Networks", MLSys 2020), generated in memory from its published definition.

For client k:

- ``u_k ~ N(0, alpha)`` and ``B_k ~ N(0, beta)`` (alpha and beta are standard deviations, as in the authors'
  generator ``data/synthetic_*/generate_niid.py``);
- ``W_k ~ N(u_k, 1)`` of shape (num_classes, dim) and ``b_k ~ N(u_k, 1)`` of shape (num_classes,);
- ``v_k`` with elements ``~ N(B_k, 1)``; ``x ~ N(v_k, Sigma)`` with ``Sigma`` diagonal, ``Sigma_jj = j^(-1.2)``
  (j = 1..dim);
- ``y = argmax(softmax(W_k x + b_k))``.

``alpha`` controls how much the clients' models differ, ``beta`` how much their inputs differ. The number of
samples of each client follows the authors' power law, ``int(lognormal(4, 2)) + 50``, capped at
:data:`MAX_CLIENT_SAMPLES` so that one rare draw (the lognormal tail reaches 10^5) cannot dominate the dataset.
"""

from __future__ import annotations

import numpy as np
import torch

from lightning_fl.checks import check_bool, check_int, check_non_negative
from lightning_fl.datamodules.datasets.base import DatasetSource, InMemoryDataset, Splits
from lightning_fl.datamodules.datasets.digits import check_val_fraction, stratified_holdout

MAX_CLIENT_SAMPLES = 10_000
"""Upper bound on one client's number of samples (train and val together), applied after the lognormal draw."""


def generate_fedprox_synthetic(
    alpha: float, beta: float, num_clients: int, dim: int, num_classes: int, iid: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the Synthetic(alpha, beta) samples of all clients.

    With ``iid=True`` (the paper's Synthetic-IID) all clients share one ``W, b ~ N(0, 1)`` and one input mean
    ``v = 0``; ``alpha`` and ``beta`` are then unused. Client sizes follow the same power law in both cases.

    Args:
        alpha: Standard deviation of the clients' model means ``u_k``.
        beta: Standard deviation of the clients' input means ``B_k``.
        num_clients: Number of clients.
        dim: Input dimension.
        num_classes: Number of classes.
        iid: Draw the IID variant.
        rng: Generator every draw comes from, in a fixed order.

    Returns:
        ``(inputs, labels, client_ids)``: float32 (N, dim), int64 (N,) and int64 (N,), clients in order.

    Example:
        >>> x, y, k = generate_fedprox_synthetic(1.0, 1.0, 3, 5, 4, False, np.random.default_rng(0))
        >>> x.shape[1], x.dtype, sorted(set(k.tolist())), int(y.max()) < 4
        (5, dtype('float32'), [0, 1, 2], True)
    """
    sizes = np.minimum(rng.lognormal(4, 2, num_clients).astype(np.int64) + 50, MAX_CLIENT_SAMPLES)
    model_means = rng.normal(0, alpha, num_clients)
    input_mean_centres = rng.normal(0, beta, num_clients)
    sigma_diag = np.arange(1, dim + 1, dtype=np.float64) ** -1.2
    if iid:
        shared_w = rng.normal(0, 1, (num_classes, dim))
        shared_b = rng.normal(0, 1, num_classes)
    inputs, labels = [], []
    for k in range(num_clients):
        if iid:
            w, b, v = shared_w, shared_b, np.zeros(dim)
        else:
            w = rng.normal(model_means[k], 1, (num_classes, dim))
            b = rng.normal(model_means[k], 1, num_classes)
            v = rng.normal(input_mean_centres[k], 1, dim)
        x = v + np.sqrt(sigma_diag) * rng.standard_normal((sizes[k], dim))
        inputs.append(x.astype(np.float32))
        labels.append(np.argmax(x @ w.T + b, axis=1))  # softmax is monotone: argmax of the logits
    client_ids = np.repeat(np.arange(num_clients, dtype=np.int64), sizes)
    return np.concatenate(inputs), np.concatenate(labels).astype(np.int64), client_ids


class FedProxSynthetic(DatasetSource):
    """FedProx's Synthetic(alpha, beta) classification data with natural clients.

    ``groups`` holds each sample's client index (0 .. num_clients - 1), so a natural-client partitioner
    reproduces the benchmark's clients. The validation set holds out ``val_fraction`` of *each* client's samples
    (at least one sample of every client stays in train): it is unseen data of the same clients, and its
    ``groups`` lets per-client accuracy be measured. Synthetic(0, 0), Synthetic(0.5, 0.5) and Synthetic(1, 1)
    are the paper's settings; ``iid=True`` is Synthetic-IID. All randomness comes from
    ``numpy.random.default_rng(seed)``.

    Args:
        alpha: How much the clients' models differ (std of ``u_k``), >= 0.
        beta: How much the clients' inputs differ (std of ``B_k``), >= 0.
        num_clients: Number of clients, >= 1 (the paper uses 30).
        dim: Input dimension, >= 1 (the paper uses 60).
        num_classes: Number of classes, >= 2 (the paper uses 10).
        iid: Generate Synthetic-IID (shared ``W, b`` and input distribution) instead.
        val_fraction: Fraction of each client's samples held out for validation, in [0, 1); 0 means no val set.
        seed: Seed of every draw.

    Raises:
        FederatedConfigError: If an argument is out of range.

    Example:
        >>> splits = FedProxSynthetic(alpha=0.5, beta=0.5, num_clients=4, seed=0).load()
        >>> splits.train.tensors[0].shape[1], sorted(set(splits.val.groups.tolist()))
        (60, [0, 1, 2, 3])
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        num_clients: int = 30,
        dim: int = 60,
        num_classes: int = 10,
        iid: bool = False,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        self.alpha = check_non_negative("alpha", alpha)  # standard deviations
        self.beta = check_non_negative("beta", beta)
        self.num_clients = check_int("num_clients", num_clients, low=1)
        self.dim = check_int("dim", dim, low=1)
        self.num_classes = check_int("num_classes", num_classes, low=2)
        self.iid = check_bool("iid", iid)
        self.val_fraction = check_val_fraction(val_fraction)
        self.seed = check_int("seed", seed, low=0)

    def load(self) -> Splits:
        """Generate the data and hold out ``val_fraction`` of every client's samples."""
        rng = np.random.default_rng(self.seed)
        x, y, k = generate_fedprox_synthetic(
            self.alpha, self.beta, self.num_clients, self.dim, self.num_classes, self.iid, rng
        )
        train_idx, val_idx = stratified_holdout(k, self.val_fraction, rng)

        def _subset(idx: np.ndarray) -> InMemoryDataset:
            return InMemoryDataset(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), groups=k[idx])

        return Splits(train=_subset(train_idx), val=_subset(val_idx) if len(val_idx) else None)
