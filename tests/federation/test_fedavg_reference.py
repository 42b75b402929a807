"""The federated loop against a hand-written plain-torch FedAvg: same data, schedule and seeds."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import TinyClassifier, quiet_trainer_kwargs

from lightning_fl import FederatedAveraging, FederatedDataModule, FederatedDDPStrategy
from lightning_fl.datamodules import DirichletPartitioner
from lightning_fl.datamodules.plan import client_batches, sample_clients
from lightning_fl.seeding import derive_seed

ROUNDS, CLIENTS, PER_ROUND, BATCH, EPOCHS, SEED = 3, 6, 3, 8, 2, 7


def plain_torch_fedavg(model: torch.nn.Module, dm: FederatedDataModule, aggregation: str) -> dict[str, torch.Tensor]:
    """FedAvg written directly in torch: sample, train each client from the global weights, average."""
    x, y = dm.train_dataset.tensors
    sizes = dm.client_sizes
    global_state = copy.deepcopy(model.state_dict())
    for round_idx in range(ROUNDS):
        clients = sample_clients(round_idx, sizes, PER_ROUND, "uniform", SEED)
        acc = {k: torch.zeros_like(v) for k, v in global_state.items()}
        weight_sum = 0.0
        for c in clients:
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            torch.manual_seed(derive_seed(SEED, "client", round_idx, int(c)))
            for b in client_batches(dm.client_indices[c], BATCH, EPOCHS, True, SEED, round_idx, int(c)):
                opt.zero_grad()
                F.cross_entropy(model(x[b]), y[b]).backward()
                opt.step()
            for k, v in model.state_dict().items():
                acc[k].add_(v - global_state[k], alpha=float(sizes[c]))
            weight_sum += float(sizes[c])
        denom = float(sizes.sum()) if aggregation == "all" else weight_sum
        global_state = {k: global_state[k] + acc[k] / denom for k in global_state}
    return global_state


def make_dm(tiny_data) -> FederatedDataModule:
    train, val = tiny_data
    return FederatedDataModule(
        train, val, partitioner=DirichletPartitioner(num_clients=CLIENTS, alpha=1.0, seed=0),
        clients_per_round=PER_ROUND, batch_size=BATCH, local_epochs=EPOCHS, seed=SEED,
    )


@pytest.mark.parametrize("aggregation", ["selected", "all"])
def test_one_process_is_bit_identical_to_plain_torch(tiny_data, aggregation):
    torch.manual_seed(0)
    model = TinyClassifier()
    reference_model = copy.deepcopy(model.net)
    dm = make_dm(tiny_data)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=ROUNDS, callbacks=[FederatedAveraging(aggregation)]))
    trainer.fit(model, datamodule=dm)
    expected = plain_torch_fedavg(reference_model, dm, aggregation)
    for name, tensor in model.net.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_first_round_changes_weights_and_later_rounds_use_new_clients(tiny_data):
    dm = make_dm(tiny_data)
    dm.setup("fit")
    plans = [dm.plan_round(r) for r in range(4)]
    assert len({tuple(p.clients) for p in plans}) > 1


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_equal_plain_torch(tiny_data):
    torch.manual_seed(0)
    model = TinyClassifier()
    reference_model = copy.deepcopy(model.net)
    dm = make_dm(tiny_data)
    strategy = FederatedDDPStrategy(start_method="spawn")
    trainer = pl.Trainer(
        **quiet_trainer_kwargs(max_epochs=ROUNDS, devices=2, strategy=strategy, callbacks=[FederatedAveraging()])
    )
    trainer.fit(model, datamodule=dm)
    dm_ref = make_dm(tiny_data)
    dm_ref.setup("fit")
    expected = plain_torch_fedavg(reference_model, dm_ref, "selected")
    for name, tensor in model.net.state_dict().items():
        np.testing.assert_allclose(tensor.numpy(), expected[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
