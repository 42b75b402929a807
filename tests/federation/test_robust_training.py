"""Malicious clients on the digits: robust aggregators keep the accuracy that FedAvg loses."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import quiet_trainer_kwargs

from lightning_fl import (
    ClassifierModule,
    FederatedAveraging,
    FederatedConfigError,
    FederatedDataModule,
    MaliciousClients,
)
from lightning_fl.datamodules import IIDPartitioner, load_digits_dataset
from lightning_fl.nn import MLP
from lightning_fl.server import CoordinateMedianAggregator, TrimmedMeanAggregator


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset(val_fraction=0.2, seed=0)


def accuracy_under_attack(digits, aggregator, attack="sign_flip", fraction=0.2, rounds=4) -> float:
    train, val = digits
    dm = FederatedDataModule(train, val, partitioner=IIDPartitioner(num_clients=10, seed=0), client_sampling="all",
                             batch_size=48, seed=0)
    torch.manual_seed(0)
    model = ClassifierModule(backbone=MLP(64, [32], 10), lr=0.2, log_train_loss=False)
    malicious = MaliciousClients(fraction=fraction, attack=attack, scale=4.0)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, check_val_every_n_epoch=rounds,
                                                callbacks=[FederatedAveraging(aggregator=aggregator), malicious]))
    trainer.fit(model, datamodule=dm)
    assert len(malicious.clients) == round(10 * fraction)
    return float(trainer.callback_metrics["val/acc"])


def test_robust_aggregators_keep_the_accuracy_fedavg_loses(digits):
    fedavg = accuracy_under_attack(digits, None)
    median = accuracy_under_attack(digits, CoordinateMedianAggregator())
    trimmed = accuracy_under_attack(digits, TrimmedMeanAggregator(beta=0.2))
    # 2 of 10 clients send -4x their update: the mean update is ~0, FedAvg stays at chance
    assert fedavg < 0.3
    assert median > 0.6 and trimmed > 0.6


class LabelProbe(pl.Callback):
    def __init__(self) -> None:
        self.labels: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        client = int(trainer.datamodule.current_plan.batch_client[batch_idx])
        self.labels.setdefault(client, []).extend(batch[1].tolist())


def test_label_flipping_flips_the_labels_of_the_chosen_clients_only(digits):
    train, _ = digits
    dm = FederatedDataModule(train, partitioner=IIDPartitioner(num_clients=5, seed=0), client_sampling="all",
                             batch_size=64, shuffle=False, seed=0)
    malicious, probe = MaliciousClients(fraction=0.4, attack="label_flip"), LabelProbe()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=[FederatedAveraging(), malicious, probe]))
    trainer.fit(ClassifierModule(log_train_loss=False), datamodule=dm)
    for client, seen in probe.labels.items():
        true = train.targets[dm.client_indices[client]].tolist()
        assert seen == ([9 - y for y in true] if client in malicious.clients else true)
    assert len(malicious.clients) == 2


def test_bad_arguments():
    with pytest.raises(FederatedConfigError, match=r"fraction must be in \[0, 1\], got 1.5"):
        MaliciousClients(fraction=1.5)
    with pytest.raises(FederatedConfigError, match=r"attack must be one of .*got 'noise'"):
        MaliciousClients(attack="noise")  # type: ignore[arg-type]
    with pytest.raises(FederatedConfigError, match="aggregator must be a lightning_fl Aggregator, got str"):
        FederatedAveraging(aggregator="median")  # type: ignore[arg-type]
