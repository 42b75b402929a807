"""Algorithms in vectorized cohorts, without the engine: on_before_cohort_step gives every slot exactly what the
sequential hook gives that client alone, and every algorithm of the package declares whether it supports cohorts.

The hooks are driven as the runtime drives them: ``on_client_start`` for every client of the chunk (the module
holding that client's start), then per step the stacked parameters with each client's gradient in its slot, then
``on_client_update`` for each client after its last step (clients with fewer steps first).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

import lightning_fl
from lightning_fl import FedProx, MaliciousClients, Scaffold
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.cohort_context import CohortContext
from lightning_fl.federation.context import ClientContext, FederatedContext, RoundContext
from lightning_fl.federation.cursor import RoundCursor
from lightning_fl.federation.flat import FlatState
from lightning_fl.systems import training_flops_per_sample

CLIENTS = [4, 1, 2]  # slot order (not sorted: state must be keyed by client, not by position)


class TwoTensors(nn.Module):
    """Two parameters whose sizes are multiples of 16: every slot of a stack starts on a SIMD lane boundary, so the
    stacked arithmetic is bit-identical to the per-client one whatever the CPU's vector width."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(4, 8, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros(16, dtype=torch.float64))


def federated_context(module: nn.Module, cursor: RoundCursor) -> tuple[FederatedContext, dict[str, torch.Tensor]]:
    """The fit's context as the server callback builds it, with the round's sum states kept in a dict."""
    sums: dict[str, torch.Tensor] = {}

    def add_sum_state(name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
        sums[name] = torch.zeros(numel, dtype=dtype)
        return sums[name]

    context = FederatedContext(
        state=FlatState(module, torch.device("cpu")), datamodule=SimpleNamespace(num_clients=10), seed=0, rank=0,
        world_size=1, local_names=frozenset(), layout=None, aggregation="selected", aggregator=None, round=cursor,
        load_client_tensors=lambda client_id: None, estimate_payload_bytes=lambda: (0.0, 0.0),
        seed_for=lambda *keys: 0, add_sum_state=add_sum_state,
    )
    return context, sums


def random_like(module: nn.Module, gen: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(p.shape, dtype=p.dtype, generator=gen) for p in module.parameters()]


def client_context(module: nn.Module, client_id: int, steps: int, start: list[torch.Tensor]) -> ClientContext:
    """As ``ClientSteps._context`` builds it: the module's parameters, and the start the client downloaded."""
    return ClientContext(round_idx=0, client_id=client_id, num_samples=10, num_batches=steps,
                         params=list(module.parameters()), start_weights=start)


@torch.no_grad()
def load(module: nn.Module, weights: list[torch.Tensor], grads: list[torch.Tensor] | None = None) -> None:
    for p, w, g in zip(module.parameters(), weights, grads or [None] * len(weights), strict=True):
        p.copy_(w)
        p.grad = None if g is None else g.clone()


def stacked(per_client: list[list[torch.Tensor]], active: list[bool] | None = None) -> list[torch.Tensor]:
    """``[K, *shape]`` per tensor; slots not ``active`` are zero (an inactive slot's gradient)."""
    active = active or [True] * len(per_client)
    return [torch.stack([t[i] if a else torch.zeros_like(t[i]) for t, a in zip(per_client, active, strict=True)])
            for i in range(len(per_client[0]))]


def leaves(values: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for v, g in zip(values, grads, strict=True):
        leaf = v.clone().requires_grad_(True)
        leaf.grad = g.clone()
        out.append(leaf)
    return out


# ---------------------------------------------------------------------------------------------------- FedProx
@pytest.mark.parametrize("active", [[True, True, True], [True, False, True]])
def test_fedprox_slot_gets_what_the_client_gets_alone(active):
    gen = torch.Generator().manual_seed(0)
    module, cursor = TwoTensors(), RoundCursor()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    prox = FedProx(mu=0.3)
    prox.on_federated_fit_start(federated_context(module, cursor)[0])
    starts, weights, grads = ([random_like(module, gen) for _ in CLIENTS] for _ in range(3))

    expected, contexts = [], []
    for k, client_id in enumerate(CLIENTS):  # sequential: the module holds client k, its gradient in .grad
        context = client_context(module, client_id, 1, starts[k])
        contexts.append(context)
        cursor.enter_client(client_id, context)
        load(module, weights[k], grads[k])
        prox.on_before_optimizer_step(None, module, optimizer)
        expected.append([p.grad.clone() for p in module.parameters()])
        cursor.leave_client()

    params = leaves(stacked(weights), stacked(grads, active))
    cohort = CohortContext(round_idx=0, clients=contexts, active=torch.tensor(active), params=params,
                           start_weights=stacked(starts))
    prox.on_before_cohort_step(cohort)
    for k in range(len(CLIENTS)):
        for p, e in zip(params, expected[k], strict=True):
            if active[k]:
                assert torch.equal(p.grad[k], e)
            else:
                assert torch.equal(p.grad[k], torch.zeros_like(e))  # an inactive slot's gradient stays zero


def test_fedprox_sequential_hook_stands_aside_on_a_cohort_step():
    # vectorized mode swaps the optimizer's parameters for the stacked ones; Lightning still calls
    # on_before_optimizer_step, which must leave the work to on_before_cohort_step
    gen = torch.Generator().manual_seed(1)
    module, cursor = TwoTensors(), RoundCursor()
    prox = FedProx(mu=0.3)
    prox.on_federated_fit_start(federated_context(module, cursor)[0])
    cursor.enter_client(CLIENTS[0], client_context(module, CLIENTS[0], 1, random_like(module, gen)))
    load(module, random_like(module, gen), random_like(module, gen))
    before = [p.grad.clone() for p in module.parameters()]
    stacked_params = [torch.zeros(3, *p.shape, dtype=p.dtype, requires_grad=True) for p in module.parameters()]
    prox.on_before_optimizer_step(None, module, torch.optim.SGD(stacked_params, lr=0.1))
    for p, b in zip(module.parameters(), before, strict=True):
        assert torch.equal(p.grad, b)


# ---------------------------------------------------------------------------------------------------- SCAFFOLD
STEPS = [3, 1, 2]  # local steps of the slots' clients: slot 1 is inactive from step 1 on, slot 2 from step 2
LRS = [0.5, 0.25, 0.125]  # the client optimizer's learning rate at local step j (a schedule)


def scaffold_with_state(module: nn.Module, cursor: RoundCursor, optimizer: torch.optim.Optimizer, seed: int):
    """A Scaffold at fit start whose server variate and two of the three clients' variates are not zero."""
    gen = torch.Generator().manual_seed(seed)
    scaffold = Scaffold()
    scaffold.on_fit_start(SimpleNamespace(optimizers=[optimizer]), module)
    context, sums = federated_context(module, cursor)
    scaffold.on_federated_fit_start(context)
    p = context.state.num_param_elements
    scaffold.server_control.copy_(torch.randn(p, dtype=torch.float64, generator=gen))
    for client_id in CLIENTS[:2]:
        scaffold.client_controls.put(client_id, torch.randn(p, dtype=torch.float64, generator=gen))
    return scaffold, sums


def scaffold_inputs(module: nn.Module):
    gen = torch.Generator().manual_seed(2)
    starts = [random_like(module, gen) for _ in CLIENTS]
    weights = [[random_like(module, gen) for _ in CLIENTS] for _ in LRS]  # [step][slot]
    grads = [[random_like(module, gen) for _ in CLIENTS] for _ in LRS]
    return starts, weights, grads


def test_scaffold_slot_gets_what_the_client_gets_alone_and_its_own_new_variate():
    starts, weights, grads = scaffold_inputs(TwoTensors())

    # sequential: one client after another, each alone in the module
    module, cursor = TwoTensors(), RoundCursor()
    optimizer = torch.optim.SGD(module.parameters(), lr=LRS[0])
    alone, alone_sums = scaffold_with_state(module, cursor, optimizer, seed=3)
    expected: dict[int, list[list[torch.Tensor]]] = {}
    for k, client_id in enumerate(CLIENTS):
        load(module, starts[k])
        context = client_context(module, client_id, STEPS[k], starts[k])
        cursor.enter_client(client_id, context)
        alone.on_client_start(context)
        expected[k] = []
        for j in range(STEPS[k]):
            optimizer.param_groups[0]["lr"] = LRS[j]
            load(module, weights[j][k], grads[j][k])
            alone.on_before_optimizer_step(None, module, optimizer)
            expected[k].append([p.grad.clone() for p in module.parameters()])
        alone.on_client_update(context, torch.zeros(0), [])
        cursor.leave_client()

    # vectorized: all clients start, then the chunk steps; each client's update right after its last step
    module, cursor = TwoTensors(), RoundCursor()
    optimizer = torch.optim.SGD(module.parameters(), lr=LRS[0])
    together, together_sums = scaffold_with_state(module, cursor, optimizer, seed=3)
    contexts = []
    for k, client_id in enumerate(CLIENTS):
        load(module, starts[k])
        contexts.append(client_context(module, client_id, STEPS[k], starts[k]))
        cursor.enter_client(client_id, contexts[-1])
        together.on_client_start(contexts[-1])
    for j, lr in enumerate(LRS):
        active = [j < s for s in STEPS]
        params = leaves(stacked(weights[j]), stacked(grads[j], active))
        optimizer.param_groups[0].update(params=params, lr=lr)  # the runtime steps the stacked tensors
        load(module, weights[j][0], grads[j][0])
        together.on_before_optimizer_step(None, module, optimizer)  # Lightning's hook: must stand aside
        assert all(torch.equal(p.grad, g) for p, g in zip(module.parameters(), grads[j][0], strict=True))
        together.on_before_cohort_step(CohortContext(0, contexts, torch.tensor(active), params, stacked(starts)))
        for k in range(len(CLIENTS)):
            for p, e in zip(params, expected[k][j] if active[k] else [torch.zeros_like(g) for g in grads[j][k]],
                            strict=True):
                assert torch.equal(p.grad[k], e), (j, k)
        for k in [k for k, s in enumerate(STEPS) if s == j + 1]:
            together.on_client_update(contexts[k], torch.zeros(0), [])

    for client_id in CLIENTS:
        assert torch.equal(together.client_controls.get(client_id), alone.client_controls.get(client_id))
    # the round's sum of c_i+ - c_i: the same terms, added in another order
    torch.testing.assert_close(together_sums["scaffold_control_delta"], alone_sums["scaffold_control_delta"],
                               rtol=0, atol=1e-12)
    assert not together._cohorts and not together._started  # the chunk's stacked sums were freed


def run_chunk(scaffold, module, optimizer, client_ids, updated, gen):
    """One chunk of one step: its clients start, step once, and those in ``updated`` send their update."""
    contexts = [client_context(module, c, 1, [p.detach().clone() for p in module.parameters()]) for c in client_ids]
    for context in contexts:
        scaffold.on_client_start(context)
    params = leaves(stacked([random_like(module, gen) for _ in client_ids]),
                    stacked([random_like(module, gen) for _ in client_ids]))
    optimizer.param_groups[0]["params"] = params
    scaffold.on_before_cohort_step(CohortContext(0, contexts, torch.ones(len(client_ids), dtype=torch.bool), params,
                                                 [p.detach().clone() for p in params]))
    for context in contexts:
        if context.client_id in updated:
            scaffold.on_client_update(context, torch.zeros(0), [])
    return [p.grad for p in params]


def test_scaffold_chunks_of_a_round_keep_their_own_sums_even_when_an_update_was_rejected():
    module, cursor = TwoTensors(), RoundCursor()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    scaffold, sums = scaffold_with_state(module, cursor, optimizer, seed=5)
    before = {c: scaffold.client_controls.get(c).clone() for c in CLIENTS[:2]}
    gen = torch.Generator().manual_seed(6)
    first = run_chunk(scaffold, module, optimizer, [4, 1], updated={4}, gen=gen)  # client 1's update is rejected
    second = run_chunk(scaffold, module, optimizer, [2], updated={2}, gen=gen)
    # one step: c_i+ is the client's raw gradient = corrected gradient - (c - c_i)
    c = scaffold.server_control
    torch.testing.assert_close(scaffold.client_controls.get(4), torch.cat([g[0].flatten() for g in first])
                               - (c - before[4]), rtol=0, atol=1e-12)
    torch.testing.assert_close(scaffold.client_controls.get(2), torch.cat([g[0].flatten() for g in second]) - c,
                               rtol=0, atol=1e-12)
    assert torch.equal(scaffold.client_controls.get(1), before[1])  # rejected: c_i stays
    expected_delta = scaffold.client_controls.get(4) - before[4] + scaffold.client_controls.get(2)
    torch.testing.assert_close(sums["scaffold_control_delta"], expected_delta, rtol=0, atol=1e-12)
    assert list(scaffold._cohorts) == [(4, 1)]  # the first chunk waits for client 1 until the round ends
    c_before = c.clone()
    scaffold.on_round_end(None, RoundContext(round_idx=0, clients=np.array(CLIENTS), reported=2, is_last=False,
                                             downlink_bytes=0, uplink_bytes=0, senders=3, rejected=1))
    assert not scaffold._cohorts and not scaffold._started
    torch.testing.assert_close(scaffold.server_control, c_before + expected_delta / 10, rtol=0, atol=1e-12)


def test_scaffold_refuses_a_cohort_whose_clients_did_not_start():
    module, cursor = TwoTensors(), RoundCursor()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    scaffold, _ = scaffold_with_state(module, cursor, optimizer, seed=4)
    contexts = [client_context(module, c, 1, [p.detach().clone() for p in module.parameters()]) for c in CLIENTS]
    scaffold.on_client_start(contexts[0])
    params = leaves(stacked([[p.detach() for p in module.parameters()]] * 3),
                    stacked([[torch.ones_like(p) for p in module.parameters()]] * 3))
    cohort = CohortContext(0, contexts, torch.ones(3, dtype=torch.bool), params, [p.detach() for p in params])
    with pytest.raises(lightning_fl.FederatedRuntimeError, match=r"clients \[4, 1, 2\], but only \[4\] started"):
        scaffold.on_before_cohort_step(cohort)


# ---------------------------------------------------------------------------------------------------- the others
def test_label_flipping_declares_it_cannot_run_in_cohorts_update_attacks_can():
    assert MaliciousClients(attack="sign_flip").supports_cohorts is True
    assert MaliciousClients(attack="scale").supports_cohorts is True
    assert MaliciousClients(attack="label_flip").supports_cohorts is False


def package_algorithms() -> list[type[FederatedAlgorithm]]:
    for info in pkgutil.walk_packages(lightning_fl.__path__, "lightning_fl."):
        importlib.import_module(info.name)
    found, todo = [], [FederatedAlgorithm]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("lightning_fl."):
                found.append(sub)
    return found


def test_every_algorithm_of_the_package_declares_whether_it_supports_cohorts():
    algorithms = package_algorithms()
    assert {"Scaffold", "FedProx", "FederatedDropout", "MaskedRandomNoise", "FedBuff"} <= {a.__name__ for a in
                                                                                          algorithms}
    undecided = [a.__name__ for a in algorithms if a.supports_cohorts is None]
    assert not undecided, f"supports_cohorts left to inspection: {undecided}"
    refused = sorted(a.__name__ for a in algorithms if a.supports_cohorts is False)
    assert refused == ["MaskedRandomNoise"]


def test_flops_are_the_class_training_step_even_when_the_instance_replaced_it():
    class Lin(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 2, bias=False)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).sum()

    module = Lin()

    def vectorized_step(batch, batch_idx):  # what a runtime installs for vectorized training
        raise AssertionError("the runtime's step was counted")

    module.training_step = vectorized_step
    assert training_flops_per_sample(module, torch.ones(3, 4), 3) == 32.0  # 2*4*2 forward + 2*4*2 weight grad
