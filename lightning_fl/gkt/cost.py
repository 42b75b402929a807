"""What a model costs an edge device: parameters and forward multiply-accumulates, counted by forward hooks.

MACs (multiply-accumulates) of ``nn.Conv2d`` and ``nn.Linear`` only: BatchNorm, ReLU, pooling and residual
additions are elementwise and add well under 1% to a ResNet. One MAC is two FLOPs; papers that report "FLOPs"
for ResNets (the FedGKT paper included) usually mean MACs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (BatchNorm running statistics, which are buffers, excluded).

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters())


def _conv_macs(module: nn.Module, out: torch.Tensor) -> int:
    assert isinstance(module, nn.Conv2d)
    kh, kw = module.kernel_size
    per_output = (module.in_channels // module.groups) * kh * kw
    return out.numel() * per_output


def _linear_macs(module: nn.Module, out: torch.Tensor) -> int:
    assert isinstance(module, nn.Linear)
    return out.numel() * module.in_features


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward MACs of ``model`` for one sample of shape ``input_shape`` (without the batch dimension).

    Runs one forward pass on zeros in eval mode (the model's mode is restored) with a hook on every convolution
    and linear layer: a convolution costs ``output elements * in_channels / groups * kh * kw``, a linear layer
    ``output elements * in_features``.

    Args:
        model: Any module whose forward takes one tensor (extra outputs such as ``H`` are ignored).
        input_shape: Shape of one input sample, e.g. ``(3, 32, 32)``.

    Returns:
        MACs per sample.

    Example:
        >>> count_macs(nn.Conv2d(1, 4, 3, padding=1, bias=False), (1, 8, 8))  # 4*8*8 outputs, 9 MACs each
        2304
        >>> count_macs(nn.Linear(10, 3), (10,))
        30
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += _conv_macs(module, output) if isinstance(module, nn.Conv2d) else _linear_macs(module, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


@dataclass(frozen=True)
class ModelCost:
    """Parameters and forward MACs per sample of one model.

    Example:
        >>> ModelCost.of(nn.Linear(4, 2), (4,))
        ModelCost(parameters=10, macs=8)
    """

    parameters: int
    macs: int

    @classmethod
    def of(cls, model: nn.Module, input_shape: Sequence[int]) -> ModelCost:
        """Count ``model``'s parameters and forward MACs for one input of ``input_shape``."""
        return cls(count_parameters(model), count_macs(model, input_shape))


def cost_table(client: ModelCost, full: ModelCost, full_name: str) -> str:
    """A markdown table comparing the edge model with the large network, ratios included.

    Example:
        >>> print(cost_table(ModelCost(10, 100), ModelCost(1000, 1500), "ResNet-56"))
        | model | parameters | forward MACs / sample |
        |---|---:|---:|
        | client (edge) | 10 | 100 |
        | ResNet-56 | 1,000 | 1,500 |
        | ratio | 100.0x | 15.0x |
    """
    return "\n".join(
        [
            "| model | parameters | forward MACs / sample |",
            "|---|---:|---:|",
            f"| client (edge) | {client.parameters:,} | {client.macs:,} |",
            f"| {full_name} | {full.parameters:,} | {full.macs:,} |",
            f"| ratio | {full.parameters / client.parameters:.1f}x | {full.macs / client.macs:.1f}x |",
        ]
    )


def edge_cost(client: nn.Module, body: nn.Module, input_shape: Sequence[int]) -> tuple[dict[str, float], str]:
    """The ``gkt/`` cost scalars of a client model and, when it has a ``stem``, of ``full_model(stem, body)``.

    Returns:
        ``(metrics, text)``: ``gkt/client_params``, ``gkt/client_macs`` (plus ``gkt/full_params``,
        ``gkt/full_macs``, ``gkt/param_ratio``, ``gkt/mac_ratio`` with a stem), and a printable table.

    Example:
        >>> from lightning_fl.gkt.resnet import ResNet8Client, ResNetServerBody
        >>> metrics, text = edge_cost(ResNet8Client(1, 10), ResNetServerBody(56, 10), (1, 8, 8))
        >>> round(metrics["gkt/param_ratio"], 1), "ResNet-56" in text
        (57.4, True)
    """
    from lightning_fl.gkt.resnet import full_model

    shape = tuple(input_shape)
    cost = ModelCost.of(client, shape)
    metrics = {"gkt/client_params": float(cost.parameters), "gkt/client_macs": float(cost.macs)}
    stem = getattr(client, "stem", None)
    if not isinstance(stem, nn.Module):
        return metrics, f"FedGKT client model: {cost.parameters:,} parameters, {cost.macs:,} forward MACs per sample"
    full = ModelCost.of(full_model(stem, body), shape)
    depth = getattr(body, "depth", None)
    name = f"ResNet-{depth} (stem + server body)" if depth else "stem + server body"
    metrics.update({
        "gkt/full_params": float(full.parameters), "gkt/full_macs": float(full.macs),
        "gkt/param_ratio": full.parameters / cost.parameters, "gkt/mac_ratio": full.macs / cost.macs,
    })
    return metrics, f"FedGKT edge cost per {shape} sample:\n{cost_table(cost, full, name)}"
