"""Training FLOPs of a LightningModule, counted once with PyTorch's FLOP counter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.flop_counter import FlopCounterMode

from lightning_fl.exceptions import FederatedConfigError


@contextmanager
def _without_logging(module: pl.LightningModule) -> Iterator[None]:
    """``self.log`` raises outside Lightning's loops; the counted step's logs are dropped."""
    module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    module.log_dict = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del module.log
        del module.log_dict


def training_flops_per_sample(module: pl.LightningModule, batch: Any, batch_samples: int) -> float:
    """FLOPs of one training step (``training_step`` forward and ``backward``) on ``batch``, per sample.

    Counts matrix multiplications and convolutions (``torch.utils.flop_counter``: elementwise operations are not
    counted) and leaves the module exactly as it was: parameters, buffers (BatchNorm statistics) and gradients.
    The optimizer step is not counted. The module class's own ``training_step`` is counted, one client's step, even
    while the runtime has replaced it on the instance (vectorized training runs a chunk of clients through it).

    Args:
        module: A module with automatic optimization whose ``training_step`` returns the loss.
        batch: One training batch, on the module's device.
        batch_samples: Samples in ``batch``.

    Raises:
        FederatedConfigError: When ``training_step`` returns no loss tensor (manual optimization): pass
            ``flops_per_sample`` to the simulation instead.

    Example:
        >>> class Lin(pl.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layer = torch.nn.Linear(4, 2, bias=False)
        ...     def training_step(self, batch, batch_idx):
        ...         return self.layer(batch).sum()
        >>> training_flops_per_sample(Lin(), torch.ones(3, 4), 3)  # 2*4*2 forward + 2*4*2 weight gradient
        32.0
    """
    saved = {name: t.detach().clone() for name, t in module.state_dict(keep_vars=True).items()}
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in module.named_parameters()}
    try:
        with _without_logging(module), FlopCounterMode(display=False) as counter, torch.enable_grad():
            out = type(module).training_step(module, batch, 0)
            loss = out["loss"] if isinstance(out, dict) else out
            if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
                raise FederatedConfigError(
                    "flops_per_sample=None counts FLOPs of training_step's returned loss, but "
                    f"{type(module).__name__}.training_step returned {type(out).__name__} without a loss to "
                    "backpropagate; pass flops_per_sample explicitly"
                )
            loss.backward()
    finally:
        with torch.no_grad():
            for name, tensor in module.state_dict(keep_vars=True).items():
                tensor.copy_(saved[name])
            for name, p in module.named_parameters():
                p.grad = grads[name]
    return float(counter.get_total_flops()) / max(int(batch_samples), 1)
