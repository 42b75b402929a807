"""``self.log`` inside a vectorized ``training_step``: recorded per client, logged once as the mean over clients.

Under ``vmap`` a logged value is one client's; Lightning's ``log`` cannot take it there (it checks and stores the
value). While the step runs, the module's ``log`` is replaced by a recorder (an instance attribute, so ``log_dict``
goes through it too) that keeps each name's value and arguments; the values leave the vmapped call as ``[G]`` tensors,
and after it the real ``log`` is called once per name with the mean over the step's active clients and the same
arguments (``batch_size`` defaults to the step's samples over all active clients, for epoch-level means).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch

from lightning_fl.exceptions import FederatedRuntimeError

__all__ = ["LogRecorder"]


class LogRecorder:
    """Records what one client's ``training_step`` logs, and logs the clients' mean afterwards.

    Args:
        module: The LightningModule whose ``log`` is recorded.
    """

    def __init__(self, module: pl.LightningModule) -> None:
        self.module = module
        self._values: dict[str, torch.Tensor] = {}
        self._arguments: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Route the module's ``self.log`` to the recorder for the duration of one client's step."""
        self._values = {}
        self.module.log = self._log  # type: ignore[method-assign]
        try:
            yield
        finally:
            self.module.__dict__.pop("log", None)

    def _log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(value, (torch.Tensor, int, float, bool)):
            raise FederatedRuntimeError(
                f"vectorized training can log tensors and numbers from training_step, got {type(value).__name__} for "
                f"'{name}' (a metric object updates state shared by all clients); log its value per step instead, "
                "or use FederatedAveraging(vectorize=False)"
            )
        self._values[name] = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        self._arguments[name] = (args, kwargs)

    def values(self) -> dict[str, torch.Tensor]:
        """What this client logged so far, by name."""
        return dict(self._values)

    def emit(self, logged: dict[str, list[torch.Tensor]], num_samples: int) -> None:
        """Log every name once: the mean over the active clients of its per-client values (``logged``: one ``[G]``
        tensor per group of the step)."""
        for name, parts in logged.items():
            value = torch.cat([p.reshape(p.shape[0], -1) for p in parts]).float().mean(0).reshape(parts[0].shape[1:])
            args, kwargs = self._arguments[name]
            if len(args) < 10:  # batch_size is log's 10th argument after the value
                kwargs = {"batch_size": num_samples, **kwargs}
            if parts[0].is_floating_point():
                value = value.to(parts[0].dtype)
            self.module.log(name, value, *args, **kwargs)
