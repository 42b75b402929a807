"""One simulated synchronous round: availability, selection, deadlines, dynamic work, failures, same seed = same
events."""

from __future__ import annotations

import numpy as np

from lightning_fl.datamodules.plan import sample_clients
from lightning_fl.systems import ClientProfiles, RoundRules, RoundWorkload, plan_round, step_samples

N = 20


def workload(**overrides) -> RoundWorkload:
    kwargs = dict(sizes=np.arange(10, 10 + N), batch_size=4, local_epochs=2, clients_per_round=5,
                  client_sampling="uniform", sampling_seed=7, flops_per_sample=1e6, downlink_bytes=1e5,
                  uplink_bytes=5e4)
    kwargs.update(overrides)
    return RoundWorkload(**kwargs)


def profiles(**overrides) -> ClientProfiles:
    rng = np.random.default_rng(0)
    columns = dict(flops_per_second=rng.uniform(1e7, 1e9, N), downlink_bytes_per_second=rng.uniform(1e5, 1e6, N),
                   uplink_bytes_per_second=rng.uniform(5e4, 5e5, N))
    columns.update(overrides)
    return ClientProfiles(**columns)


def by_hand_finish(p: ClientProfiles, w: RoundWorkload, client: int, steps: int | None = None) -> float:
    samples = step_samples(int(w.sizes[client]), w.batch_size, w.local_epochs)[:steps]
    return (w.downlink_bytes / p.downlink_bytes_per_second[client] + w.flops_per_sample * samples.sum()
            / p.flops_per_second[client] + w.uplink_bytes / p.uplink_bytes_per_second[client])


def test_everyone_available_and_no_deadline_is_the_data_modules_sample():
    w = workload()
    s = plan_round(3, 0, profiles(), w, RoundRules(failures=False))
    assert s.clients.tolist() == sample_clients(3, w.sizes, 5, "uniform", 7).tolist()
    assert s.local_steps.tolist() == [len(step_samples(int(w.sizes[c]), 4, 2)) for c in s.clients]
    assert s.round_seconds == max(by_hand_finish(profiles(), w, int(c)) for c in s.clients)


def test_deadline_drops_exactly_the_clients_the_clock_says_are_late():
    p, w = profiles(), workload(clients_per_round=12)
    full = plan_round(0, 0, p, w, RoundRules())
    finish = {int(c): by_hand_finish(p, w, int(c)) for c in full.selected}
    deadline = float(np.median(list(finish.values())))
    s = plan_round(0, 0, p, w, RoundRules(deadline=deadline))
    assert s.selected.tolist() == full.selected.tolist()
    assert s.clients.tolist() == sorted(c for c, t in finish.items() if t <= deadline)
    assert s.dropped == s.stragglers == sum(t > deadline for t in finish.values()) > 0
    assert s.round_seconds == deadline


def test_unavailable_clients_are_never_selected():
    availability = np.where(np.arange(N) % 2 == 0, 1.0, 0.0)
    for r in range(10):
        s = plan_round(r, 0, profiles(availability=availability), workload(), RoundRules())
        assert s.available == N // 2 and np.all(s.selected % 2 == 0) and len(s.clients) == 5


def test_over_selection_keeps_the_first_to_finish():
    p, w = profiles(), workload()
    s = plan_round(1, 0, p, w, RoundRules(over_selection=1.0))
    assert len(s.selected) == 10 and len(s.clients) == 5 and s.discarded == 5
    finish = {int(c): by_hand_finish(p, w, int(c)) for c in s.selected}
    assert s.clients.tolist() == sorted(sorted(finish, key=lambda c: (finish[c], c))[:5])
    assert s.round_seconds == sorted(finish.values())[4]


def test_partial_work_and_dynamic_work_meet_the_deadline():
    p, w = profiles(), workload(clients_per_round=12)
    deadline = 1.5
    partial = plan_round(0, 0, p, w, RoundRules(deadline=deadline, stragglers="partial"))
    dynamic = plan_round(0, 0, p, w, RoundRules(deadline=deadline, dynamic_work=True))
    assert partial.stragglers > 0 and len(partial.clients) > 12 - partial.stragglers  # cut, not dropped
    assert dynamic.stragglers == 0  # planned to fit (no jitter here, so nominal = actual)
    for s in (partial, dynamic):
        cut = 0
        for c, steps in zip(s.clients, s.local_steps, strict=True):
            assert by_hand_finish(p, w, int(c), int(steps)) <= deadline + 1e-9
            full = len(step_samples(int(w.sizes[c]), 4, 2))
            if steps < full:  # cut to the most steps that fit
                cut += 1
                assert by_hand_finish(p, w, int(c), int(steps) + 1) > deadline
        assert cut > 0


def test_capable_selection_prefers_clients_expected_to_finish():
    p, w = profiles(), workload()
    deadline = 1.0
    s = plan_round(0, 0, p, w, RoundRules(deadline=deadline, selection="capable"))
    assert s.stragglers == 0 and len(s.clients) == 5
    assert all(by_hand_finish(p, w, int(c)) <= deadline for c in s.clients)


def test_failures_and_an_empty_round():
    w = workload()
    s = plan_round(0, 0, profiles(failure_probability=1.0), w, RoundRules())
    assert s.failed == 5 and len(s.clients) == 0 and s.energy_joules > 0  # they downloaded and trained a little
    s = plan_round(0, 0, profiles(availability=0.0), w, RoundRules(deadline=9.0))
    assert len(s.selected) == 0 and s.round_seconds == 9.0 and s.energy_joules == 0


def test_same_seed_same_events_other_seed_other_events():
    p = ClientProfiles.preset("phones", N, seed=0)
    rules = RoundRules(deadline=1.0, over_selection=0.5, stragglers="partial")
    runs = [[plan_round(r, seed, p, workload(), rules) for r in range(8)] for seed in (1, 1, 2)]
    key = [[(s.clients.tolist(), s.local_steps.tolist(), s.failed, s.round_seconds, s.energy_joules) for s in run]
           for run in runs]
    assert key[0] == key[1] and key[0] != key[2]
