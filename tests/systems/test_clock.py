"""The simulated clock, deadlines, over-selection, energy and FedNova against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_fl import FederatedConfigError
from lightning_fl.systems import apply_deadline, client_times, energy_joules, fednova_scales, steps_within


def test_two_clients_by_hand_bandwidth_in_bytes_per_second():
    # client 0: 8 Mbit/s down = 1e6 bytes/s, 2 Mbit/s up = 2.5e5 bytes/s, 1 GFLOP/s
    # client 1: 10x slower compute, 4x faster uplink
    times = client_times(
        downlink_bytes=np.array([2e6, 2e6]), uplink_bytes=np.array([5e5, 5e5]),
        train_flops=np.array([3e9, 3e9]), downlink_bytes_per_second=np.array([1e6, 1e6]),
        uplink_bytes_per_second=np.array([2.5e5, 1e6]), flops_per_second=np.array([1e9, 1e8]),
    )
    assert times.download.tolist() == [2.0, 2.0]  # 2 MB at 1 MB/s; had bits been used, 16 s
    assert times.compute.tolist() == [3.0, 30.0]
    assert times.upload.tolist() == [2.0, 0.5]
    assert times.finish.tolist() == [7.0, 32.5]


def test_deadline_drops_exactly_the_late_clients():
    finish = np.array([4.0, 10.0, 6.0, 10.5, 1.0])
    out = apply_deadline(finish, deadline=10.0)
    assert out.kept.tolist() == [True, True, True, False, True]  # finishing exactly at the deadline counts
    assert out.stragglers.tolist() == [False, False, False, True, False]
    assert out.round_seconds == 10.0  # the server waited until the deadline for the straggler
    assert apply_deadline(finish, deadline=11.0).round_seconds == 10.5  # everyone in: the last finish


def test_over_selection_keeps_the_fastest_k():
    finish = np.array([5.0, 3.0, 8.0, 1.0, 3.0, 20.0])
    out = apply_deadline(finish, deadline=10.0, keep=3)
    assert np.flatnonzero(out.kept).tolist() == [1, 3, 4]
    assert np.flatnonzero(out.discarded).tolist() == [0, 2]
    assert out.stragglers.tolist() == [False] * 5 + [True]
    assert out.round_seconds == 3.0  # the third finish closes the round
    out = apply_deadline(finish, deadline=2.0, keep=3)  # only one in time: wait for the deadline
    assert np.flatnonzero(out.kept).tolist() == [3] and out.round_seconds == 2.0


def test_failed_clients_never_report():
    out = apply_deadline(np.array([1.0, 2.0]), deadline=None, failed=np.array([False, True]),
                         failure_seconds=np.array([0.0, 5.0]))
    assert out.kept.tolist() == [True, False] and not out.stragglers.any()
    assert out.round_seconds == 5.0
    out = apply_deadline(np.array([1.0, 2.0]), deadline=3.0, failed=np.array([False, True]),
                         failure_seconds=np.array([0.0, 0.5]))
    assert out.round_seconds == 1.0  # the failure was noticed when it happened: no waiting for the deadline


def test_steps_within_budget():
    assert steps_within(3.0, np.array([1.0, 1.0, 1.0, 1.0])) == 3
    assert steps_within(0.99, np.array([1.0])) == 0
    assert steps_within(100.0, np.array([1.0, 2.0])) == 2


def test_energy_from_flops_and_bytes():
    joules = energy_joules(np.array([2e9, 0.0]), np.array([1e6, 3e6]), np.array([1e-9, 1e-9]),
                           np.array([2e-6, 1e-6]))
    assert joules.tolist() == pytest.approx([2.0 + 2.0, 3.0])


def test_fednova_scales():
    taus, sizes = np.array([2, 4, 8]), np.array([10.0, 30.0, 60.0])
    scales = fednova_scales(taus, sizes)
    tau_eff = 0.1 * 2 + 0.3 * 4 + 0.6 * 8
    np.testing.assert_allclose(scales, tau_eff / taus)
    assert fednova_scales(np.array([5, 5, 5]), sizes).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(FederatedConfigError, match="local_steps must be >= 1"):
        fednova_scales(np.array([0, 2]), np.array([1.0, 1.0]))
