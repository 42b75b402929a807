"""``precision="64-true"``: the global model stays float64, equal to a float64 plain-torch FedAvg."""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, make_tiny_data, quiet_trainer_kwargs
from test_fedavg_reference import ROUNDS, make_dm, plain_torch_fedavg

from lightning_fl import FederatedAveraging
from lightning_fl.datamodules import InMemoryDataset
from lightning_fl.federation.flat import FlatState


def _float64(data: InMemoryDataset) -> InMemoryDataset:
    x, y = data.tensors
    return InMemoryDataset(x.double(), y)


def test_64_true_fit_equals_float64_plain_torch_fedavg():
    torch.manual_seed(0)
    model = TinyClassifier()
    reference_model = copy.deepcopy(model.net).double()
    train, val = make_tiny_data(120, seed=0), make_tiny_data(60, seed=1)
    dm = make_dm((_float64(train), _float64(val)))
    fedavg = FederatedAveraging()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=ROUNDS, precision="64-true", callbacks=[fedavg]))
    trainer.fit(model, datamodule=dm)
    expected = plain_torch_fedavg(reference_model, dm, "selected")
    for name, tensor in model.net.state_dict().items():
        assert tensor.dtype == torch.float64, name
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-12, msg=name)
    assert fedavg.state.flat.dtype == torch.float64


def test_flat_state_keeps_the_widest_floating_dtype_and_at_least_float32():
    assert FlatState(torch.nn.Linear(2, 1).double(), torch.device("cpu")).flat.dtype == torch.float64
    assert FlatState(torch.nn.Linear(2, 1).half(), torch.device("cpu")).flat.dtype == torch.float32
    assert FlatState(torch.nn.Linear(2, 1), torch.device("cpu")).flat.dtype == torch.float32
