"""Algorithms that act on a client's start and update (not on its optimizer steps) run unchanged in vectorized mode:
the result equals the sequential mode's."""

from __future__ import annotations

from functools import partial

import pytest
from conftest import TinyClassifier
from vectorized_helpers import assert_same_state, fit, make_dm

from lightning_fl import DifferentialPrivacy, FedBN, FedProx, PersonalLayers, Scaffold
from lightning_fl.algorithms.federated_dropout import FederatedDropout
from lightning_fl.systems import FedBuff, SystemsSimulation

bn_dm = partial(make_dm, n=120, drop_last=True)


@pytest.mark.parametrize("make_callbacks", [
    lambda: [FedBN()],  # client-local BatchNorm layers, loaded at each client's start
    lambda: [PersonalLayers(["net.3"])],
    lambda: [DifferentialPrivacy(clip_norm=0.5, noise_multiplier=0.3)],
    lambda: [SystemsSimulation(deadline=2.0, stragglers="partial", dynamic_work=True, seed=1)],  # unequal local steps
    lambda: [FedBuff(buffer_size=3, concurrency=4, seed=1)],  # stale clients start from older global models
    lambda: [FederatedDropout(keep=0.5)],  # every client its own submodel, of equal shapes
    lambda: [FederatedDropout(keep=0.5), SystemsSimulation(deadline=2.0, stragglers="partial", seed=1)],
    lambda: [FedProx(mu=0.1)],  # on_before_cohort_step: the proximal term per slot
    lambda: [Scaffold()],  # on_before_cohort_step: each slot's own correction and running sums
    lambda: [Scaffold(), SystemsSimulation(deadline=2.0, stragglers="partial", seed=1)],  # inactive slots
    lambda: [FedProx(mu=0.1), FederatedDropout(keep=0.5)],
], ids=["fedbn", "personal-layers", "dp", "systems-simulation", "fedbuff", "federated-dropout", "fd-systems",
        "fedprox", "scaffold", "scaffold-systems", "fedprox-fd"])
def test_algorithm_equals_sequential(make_callbacks):
    model_fn = partial(TinyClassifier, batchnorm=True)
    sequential, _ = fit(False, model_fn, bn_dm, callbacks=make_callbacks())
    vectorized, fedavg = fit(True, model_fn, bn_dm, callbacks=make_callbacks(),
                             fedavg_kwargs={"max_parallel_clients": 3})
    assert fedavg.vectorized
    assert_same_state(sequential, vectorized)
