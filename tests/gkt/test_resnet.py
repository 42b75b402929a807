"""ResNet-8 client, ResNet-56/110 server bodies: shapes, the stem + body identity, parameter and MAC counts."""

from __future__ import annotations

import pytest
import torch
from gkt_setup import one_thread
from torch import nn

from lightning_fl import FederatedConfigError
from lightning_fl.gkt import (
    ModelCost,
    ResNet8Client,
    ResNetServerBody,
    count_macs,
    count_parameters,
    full_model,
    resnet8_client,
    resnet56_body,
    resnet110_body,
    resnet_stem,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


# ---------------------------------------------------------------- analytic counts, written out independently
def bottleneck_params(cin: int, planes: int, stride: int) -> int:
    out = 4 * planes
    n = cin * planes + 2 * planes + 9 * planes * planes + 2 * planes + planes * out + 2 * out
    if stride != 1 or cin != out:
        n += cin * out + 2 * out
    return n


def bottleneck_macs(cin: int, planes: int, stride: int, size: int) -> int:
    out, s = 4 * planes, size // stride
    macs = cin * planes * size * size + 9 * planes * planes * s * s + planes * out * s * s
    if stride != 1 or cin != out:
        macs += cin * out * s * s
    return macs


def stage_specs(blocks_per_stage: list[int]) -> list[tuple[int, int, int]]:
    specs, cin = [], 16
    for planes, stride, n in zip((16, 32, 64), (1, 2, 2), blocks_per_stage, strict=False):
        for i in range(n):
            specs.append((cin, planes, stride if i == 0 else 1))
            cin = 4 * planes
    return specs


def analytic(in_ch: int, classes: int, size: int, specs: list[tuple[int, int, int]], stem: bool) -> tuple[int, int]:
    params = (in_ch * 16 * 9 + 32) if stem else 0
    macs = in_ch * 16 * 9 * size * size if stem else 0
    for cin, planes, stride in specs:
        params += bottleneck_params(cin, planes, stride)
        macs += bottleneck_macs(cin, planes, stride, size)
        size //= stride
    width = 4 * specs[-1][1]
    return params + width * classes + classes, macs + width * classes


def test_client_forward_shapes():
    logits, h = ResNet8Client(3, 10)(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and h.shape == (2, 16, 32, 32)
    logits, h = ResNet8Client(1, 7)(torch.randn(5, 1, 8, 8))
    assert logits.shape == (5, 7) and h.shape == (5, 16, 8, 8)
    assert (h >= 0).all()  # H is the stem's ReLU output


@pytest.mark.parametrize("depth", [56, 110])
def test_server_body_on_h_equals_full_network(depth):
    torch.manual_seed(0)
    client, body = ResNet8Client(3, 10), ResNetServerBody(depth, 10)
    for m in (client, body):  # non-trivial BatchNorm statistics, so that eval mode is a real check
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
    client.eval(), body.eval()
    x = torch.randn(2, 3, 16, 16)
    net = full_model(client.stem, body)
    assert net.stem is client.stem and net.body is body  # shared, not copied
    torch.testing.assert_close(net(x), body(client(x)[1]), rtol=0, atol=0)
    # the same weights in a freshly built stem give the same output
    stem = resnet_stem(3)
    stem.load_state_dict(client.stem.state_dict())
    torch.testing.assert_close(full_model(stem.eval(), body)(x), net(x))


@pytest.mark.parametrize(("name", "expected"), [("resnet8", 10_586), ("resnet56", 591_322), ("resnet110", 1_147_738)])
def test_parameter_counts_match_analytic_and_issue_figures(name, expected):
    if name == "resnet8":
        model = resnet8_client(3, 10)
        params, _ = analytic(3, 10, 32, [(16, 16, 1), (64, 16, 1)], stem=True)
    else:
        body = resnet56_body(10) if name == "resnet56" else resnet110_body(10)
        model = full_model(resnet_stem(3), body)
        params, _ = analytic(3, 10, 32, stage_specs([6, 6, 6] if name == "resnet56" else [12, 12, 12]), stem=True)
    assert count_parameters(model) == params == expected
    figure = {"resnet8": 10.6e3, "resnet56": 591e3, "resnet110": 1.15e6}[name]
    assert abs(expected - figure) / figure < 0.005


@pytest.mark.parametrize(("in_ch", "size"), [(3, 32), (1, 8)])
def test_mac_counts_match_analytic(in_ch, size):
    _, macs = analytic(in_ch, 10, size, [(16, 16, 1), (64, 16, 1)], stem=True)
    assert count_macs(resnet8_client(in_ch, 10), (in_ch, size, size)) == macs
    for depth, n in ((56, 6), (110, 12)):
        body = ResNetServerBody(depth, 10)
        _, body_macs = analytic(in_ch, 10, size, stage_specs([n, n, n]), stem=False)
        assert count_macs(body, (16, size, size)) == body_macs
        _, full_macs = analytic(in_ch, 10, size, stage_specs([n, n, n]), stem=True)
        assert count_macs(full_model(resnet_stem(in_ch), body), (in_ch, size, size)) == full_macs


def test_edge_ratios_on_cifar_are_in_the_papers_range():
    client = ModelCost.of(resnet8_client(3, 10), (3, 32, 32))
    for body, (lo, hi) in ((resnet56_body(10), (8.5, 10)), (resnet110_body(10), (16, 18))):
        full = ModelCost.of(full_model(resnet_stem(3), body), (3, 32, 32))
        assert lo < full.macs / client.macs < hi
        assert 54 < full.parameters / client.parameters < 110


def test_count_macs_restores_training_mode():
    model = resnet8_client(1, 10).train()
    count_macs(model, (1, 8, 8))
    assert model.training


@pytest.mark.parametrize("depth", [10, 57, 2, True])
def test_bad_depth_is_refused(depth):
    with pytest.raises(FederatedConfigError, match="depth must be 9 n \\+ 2"):
        ResNetServerBody(depth)


def test_bad_channels_are_refused():
    with pytest.raises(FederatedConfigError, match="in_channels must be an integer >= 1, got 0"):
        ResNet8Client(in_channels=0)
