"""Which hidden dimensions of a model Federated Dropout may drop, found by tracing the model with ``torch.fx``.

A *group* is one hidden dimension shared by the tensors that produce it and the tensors that consume it: the
output rows of a ``Linear`` (its weight's dim 0 and its bias), the matching entries of a following ``BatchNorm``
(weight, bias, running statistics), and the input columns of the next ``Linear`` or ``Conv`` (weight dim 1). After a
``Flatten`` of a convolution's output, each channel owns ``H * W`` consecutive input columns of the next ``Linear``:
the slice carries that *factor*. Dropping unit ``j`` of a group removes those entries from every member tensor.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from lightning_fl.checks import check_int
from lightning_fl.exceptions import FederatedConfigError


@dataclass(frozen=True)
class TensorSlice:
    """Dimension ``dim`` of tensor ``name`` is in a group; unit ``j`` owns indices ``j*factor .. j*factor+factor-1``.

    Parsed from ``"name:dim"`` or ``"name:dim:factor"`` (as written in YAML).

    Example:
        >>> TensorSlice.parse("head.weight:1:16")
        TensorSlice(name='head.weight', dim=1, factor=16)
    """

    name: str
    dim: int
    factor: int = 1

    @classmethod
    def parse(cls, text: str | TensorSlice) -> TensorSlice:
        """A slice from ``"name:dim[:factor]"`` (or the slice itself)."""
        if isinstance(text, TensorSlice):
            return text
        parts = str(text).split(":")
        if len(parts) not in (2, 3) or not all(p.strip().isdigit() for p in parts[1:]):
            raise FederatedConfigError(
                f"a group member must be 'tensor_name:dim' or 'tensor_name:dim:factor', got {text!r}"
            )
        factor = int(parts[2]) if len(parts) == 3 else 1
        if factor < 1:
            raise FederatedConfigError(f"a group member's factor must be >= 1, got {text!r}")
        return cls(parts[0], int(parts[1]), factor)


@dataclass
class DropoutGroup:
    """One droppable hidden dimension of ``size`` units and the tensor slices that share it.

    Args:
        size: Number of units (features of a Linear layer, channels of a Conv layer).
        members: The slices, as :class:`TensorSlice` or ``"name:dim[:factor]"`` strings (one string: one member).
        name: A label for reports (the producing layer).

    Example:
        >>> g = DropoutGroup(16, ["fc1.weight:0", "fc1.bias:0", "fc2.weight:1"], name="fc1")
        >>> [m.name for m in g.members]
        ['fc1.weight', 'fc1.bias', 'fc2.weight']
    """

    size: int
    members: list[TensorSlice] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        check_int("size", self.size, low=1)
        members: Any = self.members
        if isinstance(members, (str, TensorSlice)):  # one member, not a sequence of characters
            members = [members]
        if not isinstance(members, Sequence):
            raise FederatedConfigError(f"members must be a list of 'name:dim[:factor]' strings, got {members!r}")
        self.members = [TensorSlice.parse(m) for m in members]


# Modules and functions that act on each channel separately: a dropped unit stays dropped through them.
_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus,
    nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.AlphaDropout, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_PASS_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu, F.silu, F.mish, F.softplus, F.hardtanh, F.hardswish,
    F.dropout, F.dropout1d, F.dropout2d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
    F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.relu, torch.tanh,
    torch.sigmoid, F.sigmoid, F.tanh,
}
_SCALAR_FUNCTIONS = {operator.mul, operator.truediv, operator.add, operator.sub, torch.mul, torch.div}
_PASS_METHODS = {"relu", "tanh", "sigmoid", "contiguous", "float", "to", "type_as"}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class _Flow:
    """What the channel dimension (dim 1) of a traced value is: a group's units, possibly flattened."""

    group: int | None  # None: not droppable (the model's input, or a dimension the tracer does not follow)
    flat: bool = False  # flattened from (N, C, *spatial): each unit owns a block of the features
    carried: frozenset[int] = frozenset()  # groups an unsupported operation mixed into this value

    @property
    def lineage(self) -> frozenset[int]:
        return self.carried if self.group is None else self.carried | {self.group}


def find_dropout_groups(module: nn.Module) -> list[DropoutGroup]:
    """Trace ``module.forward`` with ``torch.fx`` and return its droppable hidden dimensions.

    Supported: ``Linear``, ``Conv1d/2d/3d`` (``groups=1``), ``BatchNorm1d/2d/3d``, elementwise activations, pooling,
    ``Dropout``, and flattening (``nn.Flatten()``, ``torch.flatten(x, 1)``, ``x.flatten(1)``,
    ``x.view(x.size(0), -1)``) in ``nn.Sequential`` or a custom ``forward``. Dimensions that reach the output are
    never dropped; the input is never a group.

    Raises:
        FederatedConfigError: The model cannot be traced, or a hidden dimension reaches an operation whose
            result would change if units were dropped (a residual sum, a LayerNorm, a view with a hard-coded
            size); the message names the layer. Declare the groups by hand then (``FederatedDropout(groups=...)``).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> [(g.name, g.size, [f"{m.name}:{m.dim}" for m in g.members]) for g in find_dropout_groups(net)]
        [('0', 8, ['0.weight:0', '0.bias:0', '2.weight:1'])]
    """
    try:
        graph = fx.Tracer().trace(module)
    except Exception as error:  # fx raises many types (TraceError, TypeError, AttributeError, ...)
        raise FederatedConfigError(
            f"Federated Dropout could not trace {type(module).__name__}.forward with torch.fx ({type(error).__name__}: "
            f"{error}); declare the droppable groups by hand: FederatedDropout(groups=[DropoutGroup(size, "
            "['layer.weight:0', 'layer.bias:0', 'next.weight:1']), ...])"
        ) from error
    return _Propagation(module).run(graph)


class _Propagation:
    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.groups: list[DropoutGroup] = []
        self.fixed: set[int] = set()
        self.problems: dict[int, list[str]] = {}

    def run(self, graph: fx.Graph) -> list[DropoutGroup]:
        flows: dict[fx.Node, _Flow | None] = {}
        for node in graph.nodes:
            flows[node] = self._visit(node, flows)
        for gid, problems in self.problems.items():
            if gid not in self.fixed:
                raise FederatedConfigError(
                    f"Federated Dropout cannot drop units of layer {self.groups[gid].name!r}: its output reaches "
                    f"{problems[0]}, which does not act on each unit separately. Supported between layers: "
                    "BatchNorm, elementwise activations, pooling, Dropout, flatten (nn.Flatten, x.flatten(1), "
                    "x.view(x.size(0), -1)). Declare the groups by hand instead: FederatedDropout(groups=[...])"
                )
        return [g for gid, g in enumerate(self.groups) if gid not in self.fixed]

    # ------------------------------------------------------------------ per node
    def _visit(self, node: fx.Node, flows: dict[fx.Node, _Flow | None]) -> _Flow | None:
        inputs = [flows.get(a) for a in _node_args(node)]
        grouped = [f for f in inputs if f is not None and f.lineage]
        if node.op == "placeholder":
            return _Flow(None)
        if node.op == "output":
            for flow in inputs:
                if flow is not None:
                    self.fixed.update(flow.lineage)
            return None
        if node.op == "get_attr":
            return _Flow(None)
        if node.op == "call_module":
            return self._module(node, self.root.get_submodule(str(node.target)), inputs, grouped)
        if inputs and all(f is None for f in inputs):
            return None  # arithmetic on sizes (x.size(0), x.shape[0]), not on tensors
        if (node.op == "call_method" and node.target in ("size", "dim")) or (node.target is getattr and (
            len(node.args) > 1 and node.args[1] in ("shape", "ndim")
        )):
            return None
        if _is_flatten(node):
            return _flattened(grouped)
        if (node.op == "call_function" and node.target in _PASS_FUNCTIONS) or (node.op == "call_method" and (
            node.target in _PASS_METHODS
        )):
            return self._one_input(node, inputs, grouped)
        if node.target in _SCALAR_FUNCTIONS and len(inputs) == 1:  # x * 2.0, x / 3, x + 1: each unit separately
            return self._one_input(node, inputs, grouped)
        return self._unsupported(node, grouped, f"{node.op} {_describe(node)}")

    def _module(
        self, node: fx.Node, module: nn.Module, inputs: list[_Flow | None], grouped: list[_Flow]
    ) -> _Flow | None:
        where = f"{node.target} ({type(module).__name__})"
        if isinstance(module, nn.Linear) or (isinstance(module, _CONVS) and module.groups == 1):
            source = grouped[0] if grouped else None
            if source is not None and source.group is not None:
                self._consume(source, f"{node.target}.weight", module, where)
            return self._produce(str(node.target), module)
        if isinstance(module, _NORMS):
            if grouped and grouped[0].group is not None and not grouped[0].flat:
                group = self.groups[grouped[0].group]  # type: ignore[index]
                for name in ("weight", "bias", "running_mean", "running_var"):
                    if getattr(module, name, None) is not None:
                        group.members.append(TensorSlice(f"{node.target}.{name}", 0))
                return grouped[0]
            return self._unsupported(node, grouped, where)
        if isinstance(module, _PASS_MODULES):
            return self._one_input(node, inputs, grouped)
        if isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                return self._unsupported(node, grouped, f"{where} with start_dim={module.start_dim}")
            return _flattened(grouped)
        return self._unsupported(node, grouped, where)

    def _produce(self, name: str, module: nn.Module) -> _Flow:
        size = int(getattr(module, "out_features" if isinstance(module, nn.Linear) else "out_channels"))
        members = [TensorSlice(f"{name}.weight", 0)]
        if getattr(module, "bias", None) is not None:
            members.append(TensorSlice(f"{name}.bias", 0))
        self.groups.append(DropoutGroup(size, members, name=name))
        return _Flow(len(self.groups) - 1)

    def _consume(self, source: _Flow, weight: str, module: nn.Module, where: str) -> None:
        group = self.groups[source.group]  # type: ignore[index]
        width = int(getattr(module, "in_features" if isinstance(module, nn.Linear) else "in_channels"))
        if source.flat and isinstance(module, nn.Linear):
            if width % group.size:
                self._problem(source, f"{where}, whose {width} inputs are not a multiple of {group.size} channels")
                return
            group.members.append(TensorSlice(weight, 1, width // group.size))
        elif source.flat or width != group.size:
            self._problem(source, f"{where} with {width} inputs from {group.size} units")
        else:
            group.members.append(TensorSlice(weight, 1))

    def _one_input(self, node: fx.Node, inputs: list[_Flow | None], grouped: list[_Flow]) -> _Flow | None:
        if len(grouped) > 1:
            return self._unsupported(node, grouped, f"{node.op} {_describe(node)} of several layers' outputs")
        tensors = [f for f in inputs if f is not None]
        return grouped[0] if grouped else (tensors[0] if tensors else None)

    def _unsupported(self, node: fx.Node, grouped: list[_Flow], what: str) -> _Flow:
        for flow in grouped:
            self._problem(flow, what)
        return _Flow(None, carried=frozenset().union(*(f.lineage for f in grouped)))

    def _problem(self, flow: _Flow, what: str) -> None:
        for gid in flow.lineage:
            self.problems.setdefault(gid, []).append(what)


def _flattened(grouped: list[_Flow]) -> _Flow:
    return _Flow(grouped[0].group, flat=True, carried=grouped[0].carried) if grouped else _Flow(None)


def _node_args(node: fx.Node) -> Iterable[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), out.append)
    return out


def _is_flatten(node: fx.Node) -> bool:
    args = node.args
    if (node.op == "call_function" and node.target is torch.flatten) or (node.op == "call_method" and (
        node.target == "flatten"
    )):
        start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else node.kwargs.get("end_dim", -1)
        return bool(start == 1 and end == -1)
    if node.op == "call_method" and node.target in ("view", "reshape"):
        shape: Sequence[object] = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        return len(shape) == 2 and shape[1] == -1 and isinstance(shape[0], fx.Node)
    return False


def _describe(node: fx.Node) -> str:
    target = node.target
    return getattr(target, "__name__", str(target))
