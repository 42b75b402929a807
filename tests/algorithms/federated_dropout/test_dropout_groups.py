"""Tracing a model for its droppable hidden dimensions."""

from __future__ import annotations

import pytest
import torch
from dropout_models import CustomForward, FlattenConv1d
from torch import nn

from lightning_fl import ClassifierModule, FederatedConfigError
from lightning_fl.nn import MLP, DropoutGroup, SmallCNN, TensorSlice, find_dropout_groups


def members(group: DropoutGroup) -> list[str]:
    return [f"{m.name}:{m.dim}:{m.factor}" for m in group.members]


def test_mlp_hidden_layers_are_groups_and_the_output_is_not():
    groups = find_dropout_groups(MLP(12, (10, 8), 3))
    assert [(g.name, g.size) for g in groups] == [("1", 10), ("3", 8)]
    assert members(groups[0]) == ["1.weight:0:1", "1.bias:0:1", "3.weight:1:1"]
    assert members(groups[1]) == ["3.weight:0:1", "3.bias:0:1", "5.weight:1:1"]


def test_conv_batchnorm_flatten_linear_carries_the_spatial_factor():
    groups = find_dropout_groups(SmallCNN(1, 4, 8, (4, 6)))
    assert [(g.name, g.size) for g in groups] == [("0", 4), ("4", 6)]
    assert members(groups[0]) == ["0.weight:0:1", "0.bias:0:1", "1.weight:0:1", "1.bias:0:1", "1.running_mean:0:1",
                                  "1.running_var:0:1", "4.weight:1:1"]
    assert members(groups[1])[-1] == "9.weight:1:4"  # 6 channels x 2x2 after two poolings


def test_custom_forward_with_functional_ops_and_view():
    groups = {g.name: g for g in find_dropout_groups(CustomForward())}
    assert set(groups) == {"conv", "fc"}
    assert members(groups["conv"])[-1] == "fc.weight:1:16"
    assert "bn1.running_var:0:1" in members(groups["fc"])
    assert members(groups["fc"])[-1] == "out.weight:1:1"


def test_conv1d_with_torch_flatten():
    (group,) = find_dropout_groups(FlattenConv1d())
    assert members(group) == ["conv.weight:0:1", "conv.bias:0:1", "head.weight:1:2"]


def test_lightning_module_is_traced_through_its_forward():
    groups = find_dropout_groups(ClassifierModule(MLP(12, (10,), 3), num_classes=3))
    assert [g.name for g in groups] == ["backbone.1"]


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.out(h + self.b(h))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.out(h if h.sum() > 0 else -h)


class HardCodedView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.out = nn.Conv2d(1, 4, 3), nn.Linear(4 * 2 * 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x).view(-1, 16))


class WithLayerNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.norm, self.out = nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.a(x)))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (Residual(), r"layer 'a'.*add"),
        (DataDependent(), r"could not trace DataDependent.forward.*groups="),
        (HardCodedView(), r"layer 'conv'.*view"),
        (WithLayerNorm(), r"layer 'a'.*norm \(LayerNorm\)"),
    ],
)
def test_unsupported_models_get_an_error_naming_the_layer(model, expected):
    with pytest.raises(FederatedConfigError, match=expected):
        find_dropout_groups(model)


def test_outputs_reached_through_unsupported_ops_are_fixed_not_errors():
    # log_softmax over the classes is fine: the output layer is never dropped
    assert [g.name for g in find_dropout_groups(CustomForward())] == ["conv", "fc"]


def test_group_members_parse_from_strings():
    assert TensorSlice.parse("a.b.weight:1:4") == TensorSlice("a.b.weight", 1, 4)
    with pytest.raises(FederatedConfigError, match="tensor_name:dim"):
        TensorSlice.parse("fc.weight")
    with pytest.raises(FederatedConfigError, match="factor must be >= 1"):
        TensorSlice.parse("fc.weight:1:0")
    with pytest.raises(FederatedConfigError, match="size must be an integer >= 1"):
        DropoutGroup(0, ["fc.weight:0"])
    assert DropoutGroup(4, "fc.weight:0").members == [TensorSlice("fc.weight", 0)]  # one string is one member
