"""The user's ``training_step`` run for a chunk of clients at once, under ``torch.func.vmap``.

:class:`CohortTrainingStep` is installed as the module's ``training_step`` (an instance attribute) for a vectorized
fit. Lightning calls it with a :class:`~lightning_fl.datamodules.cohorts.CohortBatch`; for every group of equal-size
batches it runs the module's own (class) ``training_step`` with the stacked parameters and buffers swapped in
(:class:`~lightning_fl.federation.cohort_swap.TensorSwap`), vmapped over the client axis with per-client randomness
(a group of one client runs without ``vmap``). Buffers are given as copies, and what the step changes in them
(BatchNorm's running statistics, ``num_batches_tracked``) is written back into their slots. The returned loss has
the value of the mean over the active clients and the gradient of their sum, so every slot's gradient is exactly its
client's own; each group's parameters are leaves of their own over its rows, and
:meth:`CohortTrainingStep.gather_grads` puts their gradients into the stacked parameters' ``.grad`` before the
optimizer step. What the step logs with ``self.log``/``self.log_dict`` comes out of the vmapped call and is logged
once per name as the mean over the active clients (:mod:`~lightning_fl.federation.cohort_log`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils._pytree import tree_map

from lightning_fl.datamodules.cohorts import CohortBatch
from lightning_fl.exceptions import FederatedRuntimeError
from lightning_fl.federation.cohort_log import LogRecorder
from lightning_fl.federation.cohort_swap import TensorSwap

__all__ = ["CohortTrainingStep", "StackedState", "vmap_failure"]

#: Stacked tensors of a chunk: ``(floats, ints)``, in the order of the state's float and integer specs.
StackedState = tuple[list[torch.Tensor], list[torch.Tensor]]


def vmap_failure(module: nn.Module, err: BaseException) -> FederatedRuntimeError:
    """The error raised when the module's ``training_step`` cannot run under ``vmap``."""
    return FederatedRuntimeError(
        f"vectorized training could not run {type(module).__name__}.training_step under torch.func.vmap: {err}. "
        "A vectorized training_step must avoid .item() and other reads of tensor values into Python, Python control "
        "flow that depends on tensor values, in-place updates of tensors that are not parameters or buffers, and "
        "metric objects (an error that is not vmap's shows up with vectorize=False too); train this module with "
        "FederatedAveraging(vectorize=False)"
    )


class CohortTrainingStep:
    """The vectorized ``training_step`` of one fit (see the module docstring).

    Args:
        module: The LightningModule.
        float_names: Names of the stacked floating tensors (parameters, then buffers), as in the flat state.
        int_names: Names of the stacked integer buffers.
        stacked: Returns the current chunk's stacked tensors.
    """

    def __init__(self, module: pl.LightningModule, float_names: list[str], int_names: list[str],
                 stacked: Callable[[], StackedState]) -> None:
        self.module, self.stacked = module, stacked
        self._swap = TensorSwap(module, float_names + int_names)
        self._recorder = LogRecorder(module)
        #: This step's groups: their slots and the leaves their parameters' gradients accumulate in.
        self._leaves: list[tuple[torch.Tensor, tuple[int, int] | None, dict[int, torch.Tensor]]] = []

    def install(self) -> None:
        """Make this the module's ``training_step`` (until :meth:`remove`)."""
        def training_step(batch: CohortBatch, batch_idx: int) -> Any:  # a function: Lightning reads its __code__
            return self(batch, batch_idx)

        self.module.training_step = training_step  # type: ignore[method-assign]

    def remove(self) -> None:
        """Give the module its own ``training_step`` back."""
        self.module.__dict__.pop("training_step", None)

    def __call__(self, batch: CohortBatch, batch_idx: int) -> Any:
        if not isinstance(batch, CohortBatch):  # called on an ordinary batch (a FLOP count, user code): the user's
            return type(self.module).training_step(self.module, batch, batch_idx)
        total, count, logged = self.run(batch, batch_idx)
        mean = total / count
        self._recorder.emit(logged, batch.num_samples)
        return total + (mean - total).detach()  # the mean's value, the sum's gradient

    def run(self, batch: CohortBatch, batch_idx: int) -> tuple[torch.Tensor, int, dict[str, list[torch.Tensor]]]:
        """The summed loss of the active clients, their number and what each logged (``[G]`` tensors per group)."""
        floats, ints = self.stacked()
        tensors = floats + ints
        trainer = self.module.trainer
        self._leaves = []
        total: torch.Tensor | None = None
        count = 0
        logged: dict[str, list[torch.Tensor]] = {}
        for (slots, data), span in zip(batch.groups, batch.spans, strict=True):
            data = trainer.precision_plugin.convert_input(data)
            # parameters as leaves of their own over the group's rows (views of consecutive slots, else copies): the
            # backward pass fills each group's gradient alone, gathered into the stacked gradient by gather_grads;
            # buffers always as copies, written back below: a slot's buffers saved for one group's backward pass must
            # not change when another group's are written
            leaves = {i: _rows(t, slots, span).detach().requires_grad_() for i, t in enumerate(tensors)
                      if t.requires_grad}
            self._leaves.append((slots, span, leaves))
            chosen = [leaves[i] if i in leaves else t[slots] for i, t in enumerate(tensors)]
            if len(slots) == 1:  # one client: no vmap needed
                losses, values = self._single([t[0] for t in chosen], tree_map(lambda x: x[0], data), batch_idx)
                changed = {i: t for i, t in enumerate(chosen) if not t.requires_grad}
            else:
                losses, values, changed = self._vmapped(chosen, data, batch_idx)
            with torch.no_grad():
                for i, new in changed.items():
                    tensors[i][slots] = new
            total = losses.sum() if total is None else total + losses.sum()
            count += len(slots)
            for name, value in values.items():
                logged.setdefault(name, []).append(value)
        assert total is not None, "a cohort batch has at least one group"
        return total, count, logged

    @torch.no_grad()
    def gather_grads(self) -> None:
        """Put every group's gradients into the stacked parameters' ``.grad`` (zero for idle slots); called after the
        backward pass, before the optimizer step."""
        floats, _ = self.stacked()
        for slots, span, leaves in self._leaves:
            for i, leaf in leaves.items():
                if leaf.grad is None:
                    continue
                stacked = floats[i]
                if stacked.grad is None:
                    stacked.grad = torch.zeros_like(stacked)
                if span is not None:
                    stacked.grad.narrow(0, span[0], span[1]).copy_(leaf.grad)
                else:
                    stacked.grad[slots] = leaf.grad
        self._leaves = []

    def _single(self, tensors: list[torch.Tensor], data: Any,
                batch_idx: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with self._swap.swapped(tensors), self._recorder.recording():
            loss = _loss_of(type(self.module).training_step(self.module, data, batch_idx), self.module)
            values = self._recorder.values()
        return loss.unsqueeze(0), {name: value.unsqueeze(0) for name, value in values.items()}

    def _vmapped(self, tensors: list[torch.Tensor], data: Any,
                 batch_idx: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[int, torch.Tensor]]:
        buffers = [i for i, t in enumerate(tensors) if not t.requires_grad]
        module, recorder, swap = self.module, self._recorder, self._swap

        def one_client(state: list[torch.Tensor], client_batch: Any) -> tuple[Any, ...]:
            with swap.swapped(state), recorder.recording():
                loss = _loss_of(type(module).training_step(module, client_batch, batch_idx), module)
                return loss, recorder.values(), {i: state[i] for i in buffers}

        try:
            loss, values, changed = torch.func.vmap(one_client, randomness="different")(tensors, data)
        except torch.OutOfMemoryError:
            raise  # not the module's fault: a smaller max_parallel_clients fits (a RuntimeError subclass)
        except RuntimeError as err:  # torch's vmap errors do not all say "vmap" (an in-place update: "broadcast shape")
            raise vmap_failure(self.module, err) from err
        return loss, values, changed


def _rows(tensor: torch.Tensor, slots: torch.Tensor, span: tuple[int, int] | None) -> torch.Tensor:
    """The slots' rows of a stacked tensor: a view when they are consecutive, else a copy."""
    return tensor.narrow(0, span[0], span[1]) if span is not None else tensor[slots]


def _loss_of(out: Any, module: nn.Module) -> torch.Tensor:
    """The loss of a ``training_step``'s output (a tensor, or a dict with ``"loss"``)."""
    if isinstance(out, dict) and isinstance(out.get("loss"), torch.Tensor):
        return out["loss"]
    if isinstance(out, torch.Tensor):
        return out
    raise FederatedRuntimeError(
        f"vectorized training needs {type(module).__name__}.training_step to return the loss (a tensor, or a dict "
        f"with 'loss'), got {type(out).__name__}; returning None to skip a step is not possible when a chunk of "
        "clients steps together: use FederatedAveraging(vectorize=False)"
    )
