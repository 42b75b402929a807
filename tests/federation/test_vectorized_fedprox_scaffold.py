"""FedProx and SCAFFOLD act on a chunk's steps through on_before_cohort_step: vectorized equals sequential."""

from __future__ import annotations

from functools import partial

import pytest
from vectorized_helpers import assert_same_state, fit, make_dm

from lightning_fl import FedProx, Scaffold


@pytest.mark.parametrize("make_callbacks", [lambda: [FedProx(mu=0.5)], lambda: [Scaffold()]],
                         ids=["fedprox", "scaffold"])
@pytest.mark.parametrize("chunk", [None, 2])
def test_equals_sequential(make_callbacks, chunk):
    dm_fn = partial(make_dm, local_epochs=2)
    sequential, _ = fit(False, dm_fn=dm_fn, callbacks=make_callbacks())
    vectorized, fedavg = fit(True, dm_fn=dm_fn, callbacks=make_callbacks(),
                             fedavg_kwargs={"max_parallel_clients": chunk})
    assert fedavg.vectorized
    assert_same_state(sequential, vectorized)
