"""Models of every layer pattern Federated Dropout supports, and a reference: the full model with units zeroed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightning_fl.algorithms.federated_dropout.submodel import SubmodelPlan
from lightning_fl.nn import MLP, SmallCNN


class CustomForward(nn.Module):
    """Conv -> BatchNorm2d -> F.relu -> F.max_pool2d -> view(N, -1) -> Linear -> BatchNorm1d -> tanh -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        self.bn1 = nn.BatchNorm1d(10)
        self.out = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        x = x.view(x.size(0), -1)
        return F.log_softmax(self.out(torch.tanh(self.bn1(self.fc(x))) * 2.0), dim=1)


class FlattenConv1d(nn.Module):
    """Conv1d -> ReLU -> AdaptiveAvgPool1d -> torch.flatten -> Linear, and a Dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 8, 3)
        self.pool = nn.AdaptiveAvgPool1d(2)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.flatten(self.pool(torch.relu(self.conv(x))), 1)))


def pattern_models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """name -> (model, input batch)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return {
        "mlp_sequential": (MLP(12, (10, 8), 3, dropout=0.2), torch.randn(5, 12, generator=gen)),
        "cnn_batchnorm": (SmallCNN(1, 4, 8, (4, 6)), torch.randn(5, 1, 8, 8, generator=gen)),
        "custom_forward": (CustomForward(), torch.randn(5, 2, 8, 8, generator=gen)),
        "conv1d_flatten": (FlattenConv1d(), torch.randn(5, 3, 9, generator=gen)),
    }


def randomize_norm_stats(model: nn.Module) -> None:
    """Non-trivial running statistics, so gathering them is tested."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=gen))


def zeroed_units_forward(model: nn.Module, x: torch.Tensor, plan: SubmodelPlan, kept: Sequence[torch.Tensor]):
    """The full model's output with every dropped unit's activation set to zero where the next layer reads it."""
    handles = []
    for group, dropped in zip(plan.groups, plan.dropped_features(kept), strict=True):
        for member in group.members:
            if member.dim != 1 or not member.name.endswith(".weight"):
                continue
            consumer = model.get_submodule(member.name.rsplit(".", 1)[0])
            mask = (~dropped).repeat_interleave(member.factor).float()

            def zero(module, args, mask=mask):
                (inp,) = args
                shape = [1, -1] + [1] * (inp.dim() - 2)
                return (inp * mask.view(shape),)

            handles.append(consumer.register_forward_pre_hook(zero))
    try:
        return model(x)
    finally:
        for h in handles:
            h.remove()
