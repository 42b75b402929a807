"""Federated Dropout submodels: which units are kept, the smaller shapes, and the module holding them.

A :class:`SubmodelPlan` knows, for every tensor touched by a droppable group, which of its dimensions shrink and
to what size. :meth:`SubmodelPlan.choose` draws the kept units of every group from a generator, and
:meth:`SubmodelPlan.tensor_index` turns them into the positions, in a tensor's flattened full-size storage, of the
entries a client holds (row-major, so ``full.view(-1)[index].view(small_shape)`` is the gathered tensor).

:class:`ShrunkModule` makes the module itself small: it points each touched parameter and buffer at a smaller
storage (``tensor.data = small``) and back. The parameter *objects* stay the same, so the optimizers, the precision
plugin and the strategy keep valid references; the module's forward and backward then cost what the small model
costs. The full-size storage is left untouched while the module is small.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from lightning_fl.algorithms.federated_dropout.groups import DropoutGroup
from lightning_fl.checks import check_fraction
from lightning_fl.exceptions import FederatedConfigError


class SubmodelPlan:
    """The shapes of a model's submodels at keep fraction ``keep``.

    Each group keeps ``max(1, round(keep * size))`` units, the same number for every client, so every submodel of a
    fit has the same shapes (only which units differ).

    Args:
        module: The full model.
        groups: Its droppable groups (:func:`~lightning_fl.nn.find_dropout_groups`, or by hand).
        keep: Fraction of every group's units a client keeps, in (0, 1].

    Raises:
        FederatedConfigError: A group names a tensor the module does not have, a dimension it does not have, or a
            size that does not match; or one dimension is in two groups.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> plan = SubmodelPlan(net, [DropoutGroup(8, ["0.weight:0", "0.bias:0", "2.weight:1"])], keep=0.5)
        >>> plan.small_shape("0.weight"), plan.small_shape("0.bias"), plan.small_shape("2.weight")
        (torch.Size([4, 4]), torch.Size([4]), torch.Size([2, 4]))
    """

    def __init__(self, module: nn.Module, groups: Sequence[DropoutGroup], keep: float) -> None:
        check_fraction("keep", keep, low_open=True)
        self.keep = float(keep)
        self.groups = list(groups)
        self.kept_sizes = [max(1, round(self.keep * g.size)) for g in self.groups]
        tensors = module_tensors(module)
        self.full_shapes: dict[str, torch.Size] = {}
        #: tensor name -> {dim: (group position, factor)}
        self.dims: dict[str, dict[int, tuple[int, int]]] = {}
        for gid, group in enumerate(self.groups):
            for member in group.members:
                tensor = tensors.get(member.name)
                if tensor is None:
                    raise FederatedConfigError(
                        f"dropout group {group.name or gid!r} names {member.name!r}, which is not a parameter or "
                        f"buffer of {type(module).__name__}"
                    )
                if not 0 <= member.dim < tensor.dim() or tensor.shape[member.dim] != group.size * member.factor:
                    raise FederatedConfigError(
                        f"dropout group {group.name or gid!r}: {member.name} has shape {tuple(tensor.shape)}, so its "
                        f"dim {member.dim} cannot hold {group.size} units x factor {member.factor}"
                    )
                dims = self.dims.setdefault(member.name, {})
                if member.dim in dims:
                    raise FederatedConfigError(f"dim {member.dim} of {member.name} is in two dropout groups")
                dims[member.dim] = (gid, member.factor)
                self.full_shapes[member.name] = tensor.shape

    @property
    def names(self) -> list[str]:
        """The tensors a submodel shrinks."""
        return list(self.dims)

    def small_shape(self, name: str) -> torch.Size:
        """Shape of tensor ``name`` (one of :attr:`names`) in a submodel."""
        if name not in self.dims:
            raise KeyError(name)
        shape = list(self.full_shapes[name])
        for dim, (gid, factor) in self.dims[name].items():
            shape[dim] = self.kept_sizes[gid] * factor
        return torch.Size(shape)

    def choose(self, gen: torch.Generator) -> list[torch.Tensor]:
        """The kept units of every group (sorted int64 indices), drawn from ``gen``."""
        return [
            torch.randperm(g.size, generator=gen)[:k].sort().values
            for g, k in zip(self.groups, self.kept_sizes, strict=True)
        ]

    def tensor_index(self, name: str, kept: Sequence[torch.Tensor]) -> torch.Tensor:
        """Positions in ``tensor.view(-1)`` of the entries a submodel with ``kept`` units holds, row-major."""
        shape = self.full_shapes[name]
        index = torch.zeros((), dtype=torch.int64)
        stride = 1
        strides = []
        for size in reversed(shape):
            strides.append(stride)
            stride *= size
        strides.reverse()
        for dim, size in enumerate(shape):
            if dim in self.dims[name]:
                gid, factor = self.dims[name][dim]
                axis = (kept[gid].unsqueeze(1) * factor + torch.arange(factor)).reshape(-1)
            else:
                axis = torch.arange(size)
            index = index.unsqueeze(-1) + axis * strides[dim]
        return index.reshape(-1)

    def dropped_features(self, kept: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """For every group, a boolean mask over its units: ``True`` where the unit is dropped."""
        masks = []
        for group, units in zip(self.groups, kept, strict=True):
            mask = torch.ones(group.size, dtype=torch.bool)
            mask[units] = False
            masks.append(mask)
        return masks


def module_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's parameters and buffers by name."""
    tensors: dict[str, torch.Tensor] = dict(module.named_parameters())
    tensors.update(dict(module.named_buffers()))
    return tensors


class ShrunkModule:
    """Points the module's touched tensors at small storage for a client, and back at the full storage.

    ``tensors`` are the module's own tensor objects (parameters and buffers) by name. Values are written by the
    caller after :meth:`shrink` (the server callback copies the client's start weights in); tensors named in
    ``frozen`` are not part of the federated state (frozen parameters) and are gathered from their full values here.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> plan = SubmodelPlan(net, [DropoutGroup(8, ["0.weight:0", "0.bias:0", "2.weight:1"])], keep=0.5)
        >>> shrunk = ShrunkModule(plan, dict(net.named_parameters()))
        >>> with shrunk.applied(plan.choose(torch.Generator().manual_seed(0))):
        ...     net(torch.ones(3, 4)).shape, tuple(net[0].weight.shape)
        (torch.Size([3, 2]), (4, 4))
        >>> tuple(net[0].weight.shape)
        (8, 4)
    """

    def __init__(self, plan: SubmodelPlan, tensors: dict[str, torch.Tensor], frozen: Sequence[str] = ()) -> None:
        missing = [n for n in plan.names if n not in tensors]
        if missing:
            raise FederatedConfigError(f"the module has no tensors named {missing} (named in the dropout groups)")
        self.plan = plan
        self.names = plan.names
        self.tensors = [tensors[n] for n in self.names]
        self.small = [torch.empty(plan.small_shape(n), dtype=t.dtype, device=t.device) for n, t in zip(
            self.names, self.tensors, strict=True)]
        self.frozen = set(frozen)
        self._full: list[torch.Tensor] | None = None

    @property
    def is_small(self) -> bool:
        """Whether the module currently holds a submodel."""
        return self._full is not None

    @torch.no_grad()
    def shrink(self, kept: Sequence[torch.Tensor], gather_all: bool = False) -> None:
        """Make the module the submodel keeping ``kept`` units. The frozen tensors (``gather_all``: every tensor)
        receive their kept entries from the full storage; the others are left for the caller to write."""
        if self._full is None:
            self._full = [t.data for t in self.tensors]
        for name, tensor, small, full in zip(self.names, self.tensors, self.small, self._full, strict=True):
            tensor.data = small
            tensor.grad = None
            if gather_all or name in self.frozen:
                index = self.plan.tensor_index(name, kept).to(full.device)
                small.view(-1).copy_(full.reshape(-1).index_select(0, index))

    def restore(self) -> None:
        """Point the module back at its full storage (which the submodel never wrote)."""
        if self._full is None:
            return
        for tensor, full in zip(self.tensors, self._full, strict=True):
            tensor.data = full
            tensor.grad = None
        self._full = None

    @contextlib.contextmanager
    def applied(self, kept: Sequence[torch.Tensor]) -> Iterator[None]:
        """The module as the submodel keeping ``kept`` units, gathered from the full values, for the block."""
        try:
            self.shrink(kept, gather_all=True)
            yield
        finally:
            self.restore()
