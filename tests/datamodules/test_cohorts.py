"""The vectorized round plan: chunks sorted by step count, every rank padded to the same number of steps, and the
loader's batches grouped by size without padded samples."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.utils.data import TensorDataset

from lightning_fl.datamodules.cohorts import CohortLoader, CohortPlan, cohort_steps
from lightning_fl.datamodules.plan import build_round_plan

SIZES = [3, 9, 5, 1, 7, 2]  # batches of 2: 2, 5, 3, 1, 4, 1 local steps


def plan_of(rank: int, world_size: int):
    starts = np.cumsum([0, *SIZES])
    indices = [np.arange(a, b) for a, b in itertools.pairwise(starts)]
    return build_round_plan(0, indices, clients_per_round=6, batch_size=2, local_epochs=1, client_sampling="all",
                            shuffle=False, seed=0, world_size=world_size, rank=rank)


def test_chunks_hold_the_longest_clients_first_and_cover_every_client_once():
    cohorts = CohortPlan(plan_of(0, 1), cohort_size=4)
    assert [c.clients for c in cohorts.chunks] == [(1, 4, 2, 0), (5, 3)]  # equal steps: the larger last batch first
    assert [c.steps for c in cohorts.chunks] == [(5, 4, 3, 2), (1, 1)]
    assert cohorts.num_steps == 6 == cohort_steps([2, 5, 3, 1, 4, 1], 4)
    assert cohorts.step_chunk.tolist() == [0, 0, 0, 0, 0, 1]
    assert cohorts.chunks[0].finishing(1) == [3] and cohorts.chunks[0].finishing(4) == [0]


def test_every_rank_runs_the_same_number_of_steps_with_padding():
    plans = [CohortPlan(plan_of(rank, 2), cohort_size=2) for rank in range(2)]
    own = [sum(c.length for c in p.chunks) for p in plans]
    assert plans[0].num_steps == plans[1].num_steps == max(own) and own[0] != own[1]
    short = int(np.argmin(own))
    assert (plans[short].step_chunk == -1).sum() == max(own) - own[short]  # padding steps at the end


def test_loader_groups_active_clients_by_batch_size_without_padding_samples():
    plan = plan_of(0, 1)
    loader = CohortLoader(CohortPlan(plan, cohort_size=6), TensorDataset(torch.arange(27.0)))
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    first = batches[0]
    assert first.clients == (1, 4, 2, 0, 5, 3) and first.active.all()
    groups = [(slots.tolist(), data[0].shape) for slots, data in first.groups]
    assert groups == [([0, 1, 2, 3, 4], torch.Size([5, 2])), ([5], torch.Size([1, 1]))]  # client 3 has one sample
    assert first.spans == [(0, 5), (5, 1)]  # consecutive slots: trained on views
    last = batches[-1]
    assert last.active.tolist() == [True, False, False, False, False, False]
    ((slots, (x,)),) = last.groups
    assert slots.tolist() == [0] and x.tolist() == [[11.0]]  # client 1's fifth batch: its ninth sample alone
    seen = sorted(int(v) for b in batches for _, (x,) in b.groups for v in x.flatten())
    assert seen == list(range(27))  # every sample of the round exactly once
