"""A model with a zero-element parameter trains through FederatedAveraging with codecs whose payloads go over a wire."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, make_tiny_data, quiet_trainer_kwargs

from lightning_fl import FederatedAveraging, FederatedDataModule
from lightning_fl.codecs import Chain, Codec, Identity, Payload, RandomHadamard, StochasticQuantizer, TensorPolicy, TopK
from lightning_fl.datamodules import IIDPartitioner


class OverTheWire(Codec):
    """``inner``, with every payload serialised to bytes and parsed back, as a network between processes would."""

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.lossless, self.unbiased, self.uses_seed = inner.lossless, inner.unbiased, inner.uses_seed
        self.fixed_size = inner.fixed_size
        self.sent = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def encode(self, x: torch.Tensor, seed: int, key: str | None = None) -> Payload:
        payload = self.inner.encode(x, seed, key)
        data = payload.to_bytes()
        self.sent += 1
        return Payload.from_bytes(payload.codec, data, device=x.device)

    def decode(self, payload: Payload) -> torch.Tensor:
        return self.inner.decode(payload)


class WithEmptyParameter(TinyClassifier):
    """A classifier holding a (0, 16) parameter, as a layer with no output units has."""

    def __init__(self) -> None:
        super().__init__()
        self.empty = torch.nn.Parameter(torch.zeros(0, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + self.empty.sum()


@pytest.mark.parametrize(
    "codec", [Identity(), StochasticQuantizer(bits=4), TopK(0.5), Chain(RandomHadamard(), StochasticQuantizer(bits=2))]
)
def test_zero_element_parameter_trains_with_codecs_over_a_wire(codec: Codec) -> None:
    torch.manual_seed(0)
    model = WithEmptyParameter()
    before = model.net[0].weight.detach().clone()
    uplink, downlink = OverTheWire(codec), OverTheWire(codec)
    dm = FederatedDataModule(make_tiny_data(60), make_tiny_data(30, seed=1), partitioner=IIDPartitioner(num_clients=3),
                             clients_per_round=2, batch_size=16)
    fedavg = FederatedAveraging(uplink=uplink, downlink=downlink, policy=TensorPolicy(min_numel=0))
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=2, callbacks=[fedavg]))
    trainer.fit(model, datamodule=dm)
    assert trainer.current_epoch == 2 and len(fedavg.history) == 2
    assert model.empty.shape == (0, 16)
    assert not torch.equal(model.net[0].weight, before) and torch.isfinite(model.net[0].weight).all()
    assert uplink.sent > 0 and downlink.sent > 0  # the empty tensor's payloads were among those serialised
