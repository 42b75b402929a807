"""FedBuff's event simulation: clock order, versions, staleness, bounded memory, exact resume."""

from __future__ import annotations

import pytest

from lightning_fl import FederatedConfigError
from lightning_fl.systems import BufferedAsyncSchedule, staleness_weight


def duration(client: int, draw: int) -> float:
    return 1.0 + client + 0.1 * (draw % 3)


def test_buffer_of_all_clients_is_synchronous():
    schedule = BufferedAsyncSchedule(num_clients=4, concurrency=4, buffer_size=4, seed=0)
    for version in range(3):
        runs = schedule.next_update(duration)
        assert sorted(r.client_id for r in runs) == [0, 1, 2, 3]
        assert {r.version for r in runs} == {version}  # staleness 0 every time
    assert schedule.version == 3


def test_clients_finish_in_clock_order_and_carry_their_version():
    schedule = BufferedAsyncSchedule(num_clients=10, concurrency=4, buffer_size=2, seed=1)
    seen_stale = False
    for _ in range(20):
        before = schedule.now
        runs = schedule.next_update(duration)
        assert len(runs) == 2
        assert [r.finish_seconds for r in runs] == sorted(r.finish_seconds for r in runs)
        assert runs[0].finish_seconds >= before and schedule.now == runs[-1].finish_seconds
        staleness = [schedule.version - 1 - r.version for r in runs]
        assert min(staleness) >= 0
        seen_stale |= max(staleness) > 0
        assert len(schedule.in_flight) == 4 and len(schedule.referenced_versions()) <= 4
        for run in runs:  # a client's time is what the duration said when it started
            assert run.finish_seconds - run.start_seconds == pytest.approx(duration(run.client_id, 0), abs=0.21)
    assert seen_stale


def test_state_round_trip_continues_identically():
    a = BufferedAsyncSchedule(num_clients=12, concurrency=5, buffer_size=3, seed=4)
    for _ in range(4):
        a.next_update(duration)
    b = BufferedAsyncSchedule(num_clients=12, concurrency=5, buffer_size=3, seed=4)
    b.load_state_dict(a.state_dict())
    for _ in range(4):
        assert a.next_update(duration) == b.next_update(duration)


def test_staleness_weights_and_errors():
    assert staleness_weight(8, "sqrt") == pytest.approx(1 / 3)
    assert staleness_weight(8, "constant") == 1.0
    assert staleness_weight(1, "polynomial", 2.0) == 0.25
    with pytest.raises(FederatedConfigError, match="staleness must be"):
        staleness_weight(1, "linear")
    with pytest.raises(FederatedConfigError, match=r"buffer_size must be an integer in \[1, num_clients=3\], got 4"):
        BufferedAsyncSchedule(num_clients=3, concurrency=2, buffer_size=4, seed=0)
