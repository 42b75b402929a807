"""Lazy modules (``nn.LazyLinear``, ``nn.LazyConv2d``, ...) materialised before the global state is built.

A lazy module learns its shapes in its first forward pass. The server callback mirrors the module's tensors in
flat vectors at fit start, before any batch has run, so lazy parameters must exist by then. One dry forward does
it: on the module's ``example_input_array`` when it has one (Lightning's convention, also used by the model
summary), otherwise through ``training_step`` on a training batch, stopped as soon as the last lazy module has
its shapes (before the loss, metric updates and optimizer calls that usually follow; ``self.log`` does nothing
meanwhile). Both run under ``torch.no_grad()`` in eval mode, so no BatchNorm statistic changes. Every rank uses
the same input and the weights are then broadcast from rank 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightning_fabric.utilities.apply_func import move_data_to_device
from torch import nn
from torch.nn.parameter import is_lazy

from lightning_fl.datamodules.loaders import make_batch_loader
from lightning_fl.exceptions import FederatedConfigError

if TYPE_CHECKING:
    from lightning_fl.datamodules.federated import FederatedDataModule

_HOW = (
    "set `self.example_input_array` in the module's __init__ (the input of forward, e.g. torch.zeros(2, 64)) so "
    "that lightning-fl can run forward once at fit start, or run one forward pass on a batch before trainer.fit"
)


class _DryRunDoneError(Exception):
    """Raised from a forward pre-hook to stop the dry run once no lazy tensor is left."""


def lazy_tensor_names(module: nn.Module) -> list[str]:
    """Names of the module's parameters and buffers whose shapes are not known yet.

    Example:
        >>> lazy_tensor_names(nn.Sequential(nn.LazyLinear(3)))
        ['0.weight', '0.bias']
    """
    return [name for name, t in _named_tensors(module) if is_lazy(t)]


def materialize_lazy_modules(
    trainer: "pl.Trainer", pl_module: "pl.LightningModule", datamodule: FederatedDataModule
) -> None:
    """Give every lazy module of ``pl_module`` its shapes with one dry forward, identical on every rank.

    Args:
        trainer: The Trainer (for moving the input to the module's device).
        pl_module: The module, possibly with lazy submodules.
        datamodule: Where a training batch comes from when the module has no ``example_input_array``.

    Raises:
        FederatedConfigError: If the dry forward fails or leaves lazy tensors behind, saying how to fix it.
    """
    lazy = lazy_tensor_names(pl_module)
    if not lazy:
        return
    modes = {m: m.training for m in pl_module.modules()}
    source = "the dry run"
    pl_module.eval()
    try:
        with torch.no_grad():
            if pl_module.example_input_array is not None:
                source = "forward(example_input_array)"
                _forward_example(pl_module)
            else:
                source = "training_step on the first training batch"
                _dry_training_step(trainer, pl_module, datamodule)
    except _DryRunDoneError:
        pass
    except Exception as err:  # the user's code failed on the dry run: say what was attempted and how to avoid it
        raise FederatedConfigError(
            f"the module has lazy parameters {lazy[:5]} whose shapes are set by a first forward pass, and the dry "
            f"run that lightning-fl makes at fit start failed ({type(err).__name__}: {err}); {_HOW}"
        ) from err
    finally:
        for module, training in modes.items():
            module.train(training)
    left = lazy_tensor_names(pl_module)
    if left:
        raise FederatedConfigError(
            f"the module's lazy parameters {left[:5]} were not materialised by {source}; {_HOW}"
        )
    _broadcast_from_rank_zero(pl_module)


def _forward_example(pl_module: "pl.LightningModule") -> None:
    example = move_data_to_device(pl_module.example_input_array, pl_module.device)
    if isinstance(example, (list, tuple)):
        pl_module(*example)
    elif isinstance(example, dict):
        pl_module(**example)
    else:
        pl_module(example)


def _dry_training_step(
    trainer: "pl.Trainer", pl_module: "pl.LightningModule", datamodule: FederatedDataModule
) -> None:
    """Run ``training_step`` on the first ``batch_size`` samples of client 0 until the last lazy module has run
    (its forward pre-hook, which follows the one that infers the shapes, then stops the step)."""
    assert datamodule.train_dataset is not None
    indices = datamodule.client_indices[0][: datamodule.batch_size]
    batch = next(iter(make_batch_loader(datamodule.train_dataset, [indices], collate_fn=datamodule.collate_fn)))
    batch = trainer.strategy.batch_to_device(batch)

    def stop_when_done(module: nn.Module, args: Any) -> None:
        if not lazy_tensor_names(pl_module):
            raise _DryRunDoneError

    handles = [m.register_forward_pre_hook(stop_when_done) for m in pl_module.modules() if _has_lazy(m)]
    # self.log is refused outside the training loop; the dry run logs nothing
    pl_module.log = pl_module.log_dict = _log_nothing  # type: ignore[method-assign]
    try:
        pl_module.training_step(batch, 0)
    finally:
        del pl_module.log, pl_module.log_dict
        for handle in handles:
            handle.remove()


def _log_nothing(*args: Any, **kwargs: Any) -> None:
    """Stands in for ``LightningModule.log`` during the dry run."""


def _has_lazy(module: nn.Module) -> bool:
    return any(is_lazy(t) for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)))


def _broadcast_from_rank_zero(pl_module: nn.Module) -> None:
    """Every rank materialised from the same input; their random initial values may still differ."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        with torch.no_grad():
            for _, tensor in _named_tensors(pl_module):
                dist.broadcast(tensor.data, src=0)


def _named_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters()
    yield from module.named_buffers()
