"""KD(a || b) = T^2 KL(softmax(b/T) || softmax(a/T)), checked against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_fl import FederatedConfigError
from lightning_fl.gkt import gkt_loss, kd_loss, kd_per_sample


def hand_kd(a: list[float], b: list[float], t: float) -> float:
    def softmax(z: list[float]) -> list[float]:
        e = [math.exp(v / t) for v in z]
        return [v / sum(e) for v in e]

    p, q = softmax(b), softmax(a)
    return t * t * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


@pytest.mark.parametrize("t", [1.0, 3.0, 0.5])
def test_kd_equals_hand_computation(t):
    a, b = [[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]], [[1.0, 2.0, -0.5], [3.0, 0.0, -3.0]]
    got = kd_per_sample(torch.tensor(a), torch.tensor(b), t)
    expected = [hand_kd(a[i], b[i], t) for i in range(2)]
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    assert kd_loss(torch.tensor(a), torch.tensor(b), t).item() == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_kd_matches_torch_kl_div_and_is_zero_for_equal_logits():
    torch.manual_seed(0)
    a, b = torch.randn(6, 10), torch.randn(6, 10)
    ref = F.kl_div(F.log_softmax(a / 3, -1), F.softmax(b / 3, -1), reduction="batchmean") * 9
    torch.testing.assert_close(kd_loss(a, b, 3.0), ref)
    assert kd_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)


def test_teacher_gets_no_gradient_and_mask_counts_missing_rows_as_zero():
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3, requires_grad=True)
    mask = torch.tensor([True, False, True, False])
    loss = kd_loss(a, b, 2.0, mask)
    loss.backward()
    assert b.grad is None
    assert a.grad is not None and a.grad[1].abs().sum() == 0 and a.grad[0].abs().sum() > 0
    per = kd_per_sample(a.detach(), b.detach(), 2.0)
    assert loss.item() == pytest.approx((per[0] + per[2]).item() / 4, rel=1e-6)


def test_gkt_loss_without_teacher_is_cross_entropy():
    z, y = torch.randn(5, 4), torch.randint(0, 4, (5,))
    loss, kd = gkt_loss(z, y, None, weight=1.0)
    torch.testing.assert_close(loss, F.cross_entropy(z, y))
    assert kd.item() == 0.0
    teacher = torch.randn(5, 4)
    loss, kd = gkt_loss(z, y, teacher, weight=0.5, temperature=3.0)
    torch.testing.assert_close(loss, F.cross_entropy(z, y) + 0.5 * kd_loss(z, teacher, 3.0))


def test_kd_in_bfloat16_is_computed_in_float32():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    got = kd_loss(a.bfloat16(), b.bfloat16())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, kd_loss(a.bfloat16().float(), b.bfloat16().float()))


def test_bad_arguments_are_refused():
    with pytest.raises(FederatedConfigError, match="temperature must be a finite number > 0, got 0"):
        kd_per_sample(torch.zeros(1, 2), torch.zeros(1, 2), 0)
    with pytest.raises(FederatedConfigError, match="same shape"):
        kd_per_sample(torch.zeros(1, 2), torch.zeros(1, 3))
