"""BatchNorm and a client's last batch of one sample: a clear error at the first batch, or drop_last."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import quiet_trainer_kwargs
from torch import nn
from torchvision.models import resnet18

from lightning_fl import FederatedAveraging, FederatedDataModule
from lightning_fl.datamodules import InMemoryDataset, NaturalPartitioner
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.batchnorm_guard import BatchNormGuard

SIZES = (9, 8, 16)  # with batch_size=8, client 0's last batch holds one sample


class VisionModule(pl.LightningModule):
    """A LightningModule around any image classifier (torchvision's resnet18, or a small conv net)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def small_cnn(head_batchnorm: bool) -> nn.Module:
    """conv-BN-ReLU (torchvision style), pooled, then a head with or without BatchNorm1d on the features."""
    head: list[nn.Module] = [nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU()] if head_batchnorm else []
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), *head, nn.Linear(8, 3))


def make_dm(drop_last: bool = False) -> FederatedDataModule:
    gen = torch.Generator().manual_seed(0)
    n = sum(SIZES)
    groups = np.repeat(np.arange(len(SIZES)), SIZES)
    data = InMemoryDataset(torch.randn(n, 3, 16, 16, generator=gen), torch.randint(0, 3, (n,), generator=gen), groups)
    return FederatedDataModule(data, partitioner=NaturalPartitioner(), clients_per_round=3, batch_size=8,
                               drop_last=drop_last)


def fit(net: nn.Module, dm: FederatedDataModule, rounds: int = 2) -> VisionModule:
    torch.manual_seed(0)
    module = VisionModule(net)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[FederatedAveraging()]))
    trainer.fit(module, datamodule=dm)
    return module


@pytest.mark.parametrize("make_net", [lambda: resnet18(num_classes=3), lambda: small_cnn(head_batchnorm=True)],
                         ids=["torchvision-resnet18", "batchnorm1d-head"])
def test_a_batch_of_one_into_batchnorm_is_refused_at_the_first_batch_naming_drop_last(make_net):
    with pytest.raises(FederatedConfigError, match=r"sees one value per sample and channel.*clients \[0\] .*\[9\] "
                                                   r"samples.*drop_last=True"):
        fit(make_net(), make_dm())


def test_drop_last_trains_batchnorm_on_full_batches_only():
    dm = make_dm(drop_last=True)
    module = fit(small_cnn(head_batchnorm=True), dm)
    plan = dm.plan_round(1)
    assert [len(b) for b in plan.batches] == [8] * 4  # 9 -> 1 batch, 8 -> 1, 16 -> 2
    assert dm.client_sizes.tolist() == list(SIZES)  # weights stay the clients' sizes
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_batchnorm_over_spatial_maps_accepts_a_batch_of_one():
    """Several values per channel: torch computes statistics from one image, and nothing is refused."""
    module = fit(small_cnn(head_batchnorm=False), make_dm())
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_a_later_one_sample_batch_gets_the_explanation_instead_of_torchs_error():
    """Inputs of varying length: the first batch gives several values per channel, a later one a single value."""
    bn = nn.BatchNorm1d(4)
    guard = BatchNormGuard(bn, np.array([9, 8]), batch_size=8, drop_last=False, where=lambda: "round 3, client 0")
    bn(torch.randn(8, 4, 5))  # several values per sample and channel: accepted
    with pytest.raises(FederatedConfigError, match=r"'' received a batch of one sample in training \(round 3, "
                                                   r"client 0\).*clients \[0\].*drop_last=True"):
        bn(torch.randn(1, 4, 1))
    guard.remove()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):  # torch's own, once removed
        bn(torch.randn(1, 4, 1))
    assert not BatchNormGuard(bn, np.array([8, 16]), batch_size=8, drop_last=False, where=str)  # nothing to guard
