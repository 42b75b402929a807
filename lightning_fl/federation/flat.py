"""The global model as flat tensors, with per-tensor views, so a round costs a few vectorised operations."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the model's federated state: its name, shape and slice of the flat vector."""

    name: str
    shape: torch.Size
    offset: int
    numel: int
    is_parameter: bool


class FlatState:
    """The federated state of a module: its floating parameters (trainable or frozen) and floating buffers in one
    floating vector, its integer buffers (``num_batches_tracked``) in one int64 vector.

    The floating vector has the module's widest floating dtype, and at least float32 (:func:`state_dtype`): a
    ``precision="64-true"`` module keeps float64 global weights exactly; half-precision modules are averaged in
    float32.

    ``params`` occupy ``flat[:num_param_elements]``; floating buffers follow. The module's own tensors are kept as
    references (``module_float``, ``module_int``) so loading the global state is one foreach copy.

    Args:
        module: The LightningModule (or any ``nn.Module``) to mirror.
        device: Where the flat vectors live (the module's device).
        extra_names: Frozen parameters that the server updates although no client trains them (FedMRN's frozen
            weights): their updates always travel, even when a client leaves them unchanged.

    Example:
        >>> state = FlatState(nn.BatchNorm1d(3), torch.device("cpu"))
        >>> [s.name for s in state.float_specs], state.numel, [s.name for s in state.int_specs]
        (['weight', 'bias', 'running_mean', 'running_var'], 12, ['num_batches_tracked'])
    """

    def __init__(
        self, module: nn.Module, device: torch.device, extra_names: set[str] | frozenset[str] = frozenset()
    ) -> None:
        unknown = set(extra_names) - {n for n, _ in module.named_parameters()}
        if unknown:
            raise ValueError(f"extra_names must name parameters of the module, got unknown {sorted(unknown)}")
        # Every floating parameter is federated, trainable or frozen: a parameter frozen at fit start and unfrozen
        # later (BackboneFinetuning) starts every client from the global weights and is averaged once it trains;
        # while frozen its update is zero and it is not sent on the uplink (ClientExchange.upload).
        params = [(n, p) for n, p in module.named_parameters() if p.is_floating_point()]
        #: Frozen parameters that an algorithm updates on the server (``extra_names``): never skipped as frozen.
        self.extra_names = frozenset(extra_names)
        buffers = [(n, b) for n, b in _persistent_buffers(module)]
        float_bufs = [(n, b) for n, b in buffers if b.is_floating_point()]
        int_bufs = [(n, b) for n, b in buffers if not b.is_floating_point()]
        self.float_specs: list[TensorSpec] = []
        offset = 0
        for name, tensor in params + float_bufs:
            is_param = isinstance(tensor, nn.Parameter)
            self.float_specs.append(TensorSpec(name, tensor.shape, offset, tensor.numel(), is_param))
            offset += tensor.numel()
        self.numel = offset
        self.num_param_elements = sum(s.numel for s in self.float_specs if s.is_parameter)
        self.int_specs: list[TensorSpec] = []
        int_offset = 0
        for name, tensor in int_bufs:
            self.int_specs.append(TensorSpec(name, tensor.shape, int_offset, tensor.numel(), False))
            int_offset += tensor.numel()
        self.int_numel = int_offset
        self.module_float: list[torch.Tensor] = [t for _, t in params + float_bufs]
        self.module_int: list[torch.Tensor] = [t for _, t in int_bufs]
        self.device = device
        #: The dtype of the floating state (:func:`state_dtype` of the module's tensors).
        self.dtype = state_dtype(self.module_float)
        self.flat = torch.zeros(self.numel, dtype=self.dtype, device=device)
        self.int_flat = torch.zeros(self.int_numel, dtype=torch.int64, device=device)
        self.views = self.make_views(self.flat)
        self.int_views = [self.int_flat[s.offset : s.offset + s.numel].view(s.shape) for s in self.int_specs]
        self.read_module()

    def make_views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-tensor views into a vector laid out like :attr:`flat`."""
        return [flat[s.offset : s.offset + s.numel].view(s.shape) for s in self.float_specs]

    def new_flat(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A zero vector laid out like :attr:`flat`, with its views."""
        flat = torch.zeros_like(self.flat)
        return flat, self.make_views(flat)

    @torch.no_grad()
    def read_module(self) -> None:
        """Copy the module's current tensors into the global vectors."""
        if self.module_float:
            torch._foreach_copy_(self.views, self.module_float)
        for dst, src in zip(self.int_views, self.module_int, strict=False):
            dst.copy_(src)

    @torch.no_grad()
    def write_module(self, views: list[torch.Tensor] | None = None) -> None:
        """Copy ``views`` (default: the global state) and the integer buffers into the module."""
        if self.module_float:
            torch._foreach_copy_(self.module_float, self.views if views is None else views)
        for dst, src in zip(self.module_int, self.int_views, strict=False):
            dst.copy_(src)

    @torch.no_grad()
    def module_minus(self, start_views: list[torch.Tensor], out_views: list[torch.Tensor]) -> None:
        """``out = module tensors - start``: the update of a client that started from ``start_views`` (one pass over
        memory per tensor, no intermediate copy; the views may be a submodel's, matching the module's shapes)."""
        for tensor, begin, dst in zip(self.module_float, start_views, out_views, strict=True):
            torch.sub(tensor.detach(), begin, out=dst)

    @torch.no_grad()
    def module_int_minus_global(self) -> torch.Tensor:
        """Integer buffers' increments since the global state (for example batches tracked by BatchNorm)."""
        out = torch.empty_like(self.int_flat)
        for spec, src in zip(self.int_specs, self.module_int, strict=False):
            out[spec.offset : spec.offset + spec.numel] = src.reshape(-1)
        return out - self.int_flat


def state_dtype(tensors: list[torch.Tensor]) -> torch.dtype:
    """The dtype the global state of floating ``tensors`` is kept in: their widest dtype, at least float32.

    Example:
        >>> state_dtype([torch.zeros(1, dtype=torch.float64), torch.zeros(1)]), state_dtype([torch.zeros(1).half()])
        (torch.float64, torch.float32)
    """
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _persistent_buffers(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    out = []
    for mod_name, mod in module.named_modules():
        for buf_name, buf in mod.named_buffers(recurse=False):
            if buf is None or buf_name in mod._non_persistent_buffers_set:
                continue
            out.append((f"{mod_name}.{buf_name}" if mod_name else buf_name, buf))
    return out
