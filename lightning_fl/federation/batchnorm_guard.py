"""A clear error, at the first batch, when a client's batch of one sample would reach a BatchNorm layer.

In training mode BatchNorm normalises with the statistics of the batch; with one value per channel (a batch of one
sample after global pooling, or a ``BatchNorm1d`` on features) torch stops with "Expected more than 1 value per
channel when training", rounds into a fit, whenever a client whose size leaves a last batch of one sample is
sampled. The guard watches the BatchNorm layers' inputs: at the first training batch it knows whether a
one-sample batch would fail (one value per sample and channel) and, if any client would produce one, refuses the
fit there, naming ``drop_last``; a one-sample batch that reaches such a layer later gets the same explanation.
A one-sample batch into a BatchNorm over spatial maps (several values per channel) is valid and left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle

from lightning_fl.exceptions import FederatedConfigError


def lone_sample_clients(sizes: np.ndarray, batch_size: int, drop_last: bool) -> list[int]:
    """Clients whose local epochs end with a batch of exactly one sample.

    Example:
        >>> lone_sample_clients(np.array([17, 16, 33, 1]), 16, drop_last=False)
        [0, 2, 3]
        >>> lone_sample_clients(np.array([17, 16]), 16, drop_last=True)
        []
    """
    if drop_last:
        return []
    if batch_size == 1:
        return list(range(len(sizes)))
    return [int(c) for c in np.flatnonzero(np.asarray(sizes) % batch_size == 1)]


class BatchNormGuard:
    """Forward pre-hooks on a module's BatchNorm layers that explain, and anticipate, torch's one-sample error.

    Args:
        module: The module whose BatchNorm layers to watch.
        sizes: Every client's number of training samples.
        batch_size: The data module's batch size.
        drop_last: Whether the data module drops short last batches.
        where: Describes the batch being trained (round and client) for the error message.
    """

    def __init__(
        self, module: nn.Module, sizes: np.ndarray, batch_size: int, drop_last: bool, where: Callable[[], str]
    ) -> None:
        self.lone = lone_sample_clients(sizes, batch_size, drop_last)
        self.sizes = sizes
        self.batch_size = batch_size
        self.where = where
        self._seen: set[str] = set()
        # Without a client that leaves a batch of one sample no such batch exists (padding batches copy a client's
        # first batch): the module then runs without hooks.
        self._handles: list[RemovableHandle] = [
            layer.register_forward_pre_hook(self._hook(name))
            for name, layer in module.named_modules()
            if isinstance(layer, _BatchNorm) and self.lone
        ]

    def __bool__(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        """Take the hooks off the module (at the end of the fit)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str) -> Callable[[nn.Module, Any], None]:
        def check(layer: nn.Module, args: Any) -> None:
            assert isinstance(layer, _BatchNorm)
            x = args[0] if args else None
            uses_batch_stats = layer.training or (layer.running_mean is None and layer.running_var is None)
            if not uses_batch_stats or not isinstance(x, torch.Tensor) or x.dim() < 2:
                return
            per_sample = x[0, 0].numel()  # values per channel that one sample contributes
            if x.shape[0] * per_sample == 1:
                raise FederatedConfigError(
                    f"BatchNorm layer '{name}' received a batch of one sample in training ({self.where()}) and "
                    f"cannot compute batch statistics from one value per channel; {self._advice()}"
                )
            if name not in self._seen:
                self._seen.add(name)
                if per_sample == 1 and self.lone:
                    raise FederatedConfigError(
                        f"BatchNorm layer '{name}' sees one value per sample and channel, so a batch of one sample "
                        f"would stop training with torch's 'Expected more than 1 value per channel when "
                        f"training'; {self._advice()}"
                    )

        return check

    def _advice(self) -> str:
        lone = self.lone[:10]
        if not lone:
            return "set FederatedDataModule(drop_last=True) or feed it batches of more than one sample"
        return (
            f"clients {lone} ({len(self.lone)} in all) have {[int(self.sizes[c]) for c in lone]} samples, leaving "
            f"a last batch of one with batch_size={self.batch_size}. Set FederatedDataModule(drop_last=True), or "
            "choose a batch_size that leaves no client one sample over"
        )
