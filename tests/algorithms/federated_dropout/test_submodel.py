"""Submodels: smaller dense tensors that compute what the full model computes with the dropped units zeroed."""

from __future__ import annotations

import pytest
import torch
from dropout_models import pattern_models, randomize_norm_stats, zeroed_units_forward
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_fl import FederatedConfigError
from lightning_fl.algorithms.federated_dropout.layout import SubmodelLayout
from lightning_fl.federation.flat import FlatState
from lightning_fl.nn import MLP, DropoutGroup, ShrunkModule, SmallCNN, SubmodelPlan, find_dropout_groups


def shrinkable(model: nn.Module, keep: float) -> tuple[SubmodelPlan, ShrunkModule]:
    plan = SubmodelPlan(model, find_dropout_groups(model), keep)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    return plan, ShrunkModule(plan, tensors)


@pytest.mark.parametrize("name", list(pattern_models()))
@pytest.mark.parametrize("keep", [0.5, 0.75])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_submodel_output_equals_full_model_with_dropped_units_zeroed(name, keep, mode):
    model, x = pattern_models()[name]
    randomize_norm_stats(model)
    if mode == "train":  # batch statistics are per channel: the same for kept channels; Dropout off for determinism
        model.train()
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    else:
        model.eval()
    plan, shrunk = shrinkable(model, keep)
    kept = plan.choose(torch.Generator().manual_seed(3))
    expected = zeroed_units_forward(model, x, plan, kept)
    with shrunk.applied(kept):
        got = model(x)
        small_params = sum(p.numel() for p in model.parameters())
    assert small_params < sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)  # no 1/keep rescaling anywhere
    reference = zeroed_units_forward(model, x, plan, [torch.arange(g.size) for g in plan.groups])
    torch.testing.assert_close(reference, model(x))  # the module is full-size and unchanged afterwards


@pytest.mark.parametrize("name", list(pattern_models()))
def test_gather_then_scatter_is_identity_on_kept_coordinates_and_zero_elsewhere(name):
    model, _ = pattern_models()[name]
    randomize_norm_stats(model)
    state = FlatState(model, torch.device("cpu"))
    plan = SubmodelPlan(model, find_dropout_groups(model), 0.5)
    layout = SubmodelLayout(state, plan)
    kept = plan.choose(torch.Generator().manual_seed(0))
    index = layout.flat_index(kept)
    small = state.flat[index]
    assert small.numel() == layout.numel < state.numel
    back = torch.zeros_like(state.flat).index_copy_(0, index, small)
    held = torch.zeros_like(state.flat, dtype=torch.bool)
    held[index] = True
    assert torch.equal(back[held], state.flat[held]) and not back[~held].any()
    # the small flat vector holds exactly the shrunk module's tensors, gathered by plain indexing
    _, shrunk = shrinkable(model, 0.5)
    with shrunk.applied(kept):
        small_module = [t.detach().clone() for t in state.module_float]
    for spec, view, module_tensor in zip(layout.float_specs, layout.make_views(small), small_module, strict=True):
        assert view.shape == module_tensor.shape and torch.equal(view, module_tensor), spec.name
    w = dict(model.named_parameters())[plan.groups[0].members[0].name]  # the first producer: kept rows
    assert torch.equal(small_module[0], w[kept[0]])


def per_module_costs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int]]:
    """module name -> (parameter count, measured training FLOPs of forward + backward)."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    flops = counter.get_flop_counts()
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            key = next(k for k in flops if k.endswith(f".{name}") or k == name)
            out[name] = (sum(p.numel() for p in module.parameters(recurse=False)), sum(flops[key].values()))
    return out


@pytest.mark.parametrize(
    ("model", "x", "expected"),
    [
        # input layer, hidden layer, output layer
        (MLP(16, (32, 32), 10), torch.randn(4, 16), {"1": 0.5, "3": 0.25, "5": 0.5}),
        (SmallCNN(1, 10, 8, (8, 16)), torch.randn(4, 1, 8, 8), {"0": 0.5, "4": 0.25, "9": 0.5}),
    ],
)
def test_parameters_and_measured_flops_scale_as_p_squared_inside_and_p_at_the_edges(model, x, expected):
    plan, shrunk = shrinkable(model, 0.5)
    full = per_module_costs(model, x)
    with shrunk.applied(plan.choose(torch.Generator().manual_seed(0))):
        small = per_module_costs(model, x)
        small_weights = {name: model.get_submodule(name).weight.numel() for name in expected}
    for name, ratio in expected.items():
        assert small[name][1] / full[name][1] == pytest.approx(ratio), f"measured FLOPs of layer {name}"
        assert small_weights[name] / model.get_submodule(name).weight.numel() == pytest.approx(ratio), name
        assert small[name][0] < full[name][0]


def test_plan_rejects_groups_that_do_not_match_the_model():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(FederatedConfigError, match=r"keep must be in \(0, 1\], got 0.0"):
        SubmodelPlan(net, [], keep=0.0)
    with pytest.raises(FederatedConfigError, match=r"'9\.weight', which is not a parameter"):
        SubmodelPlan(net, [DropoutGroup(8, ["9.weight:0"])], keep=0.5)
    with pytest.raises(FederatedConfigError, match=r"shape \(2, 8\), so its dim 0 cannot hold 8 units"):
        SubmodelPlan(net, [DropoutGroup(8, ["2.weight:0"])], keep=0.5)
    with pytest.raises(FederatedConfigError, match="in two dropout groups"):
        SubmodelPlan(net, [DropoutGroup(8, ["0.weight:0"]), DropoutGroup(8, ["0.weight:0"])], keep=0.5)


def test_every_group_keeps_at_least_one_unit_and_draws_are_seeded():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    plan = SubmodelPlan(net, find_dropout_groups(net), keep=0.01)
    assert plan.kept_sizes == [1]
    a = plan.choose(torch.Generator().manual_seed(5))
    b = plan.choose(torch.Generator().manual_seed(5))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
