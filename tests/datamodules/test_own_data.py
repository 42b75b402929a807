"""Datasets users bring: dict samples, language-model samples without class labels, padding collators, drop_last."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import quiet_trainer_kwargs
from torch import nn
from torch.utils.data import Dataset

from lightning_fl import FederatedAveraging, FederatedDataModule
from lightning_fl.datamodules import DirichletPartitioner, IIDPartitioner, QuantitySkewPartitioner
from lightning_fl.datamodules.report import partition_report
from lightning_fl.exceptions import FederatedConfigError

VOCAB = 11


class TokenDataset(Dataset):
    """Hugging Face style language-model samples: {"input_ids": ..., "labels": ...}; no class label anywhere.
    With ``ragged`` the sequences have different lengths (they need a padding collator)."""

    def __init__(self, n: int = 96, seq: int = 8, ragged: bool = False, as_tuples: bool = False) -> None:
        gen = torch.Generator().manual_seed(0)
        self.tokens = torch.randint(0, VOCAB, (n, seq + 1), generator=gen)
        self.lengths = torch.randint(3, seq + 1, (n,), generator=gen) if ragged else torch.full((n,), seq)
        self.as_tuples = as_tuples

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> Any:
        t = self.tokens[i, : int(self.lengths[i]) + 1]
        if self.as_tuples:  # Lightning's WikiText2 demo: (inputs, targets), both sequences
            return t[:-1], t[1:]
        return {"input_ids": t[:-1], "labels": t[1:]}


def pad_collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A padding collator, as Hugging Face's DataCollatorWithPadding: labels padded with -100 (ignored)."""
    ids = nn.utils.rnn.pad_sequence([s["input_ids"] for s in samples], batch_first=True)
    labels = nn.utils.rnn.pad_sequence([s["labels"] for s in samples], batch_first=True, padding_value=-100)
    return {"input_ids": ids, "labels": labels}


class TinyLM(pl.LightningModule):
    """A bigram language model whose steps read dict batches (or tuples, with ``as_tuples``)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.out = nn.Linear(16, VOCAB)

    def loss(self, batch: Any) -> torch.Tensor:
        ids, labels = (batch["input_ids"], batch["labels"]) if isinstance(batch, dict) else batch
        return F.cross_entropy(self.out(self.embed(ids)).flatten(0, 1), labels.flatten(), ignore_index=-100)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.loss(batch)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", self.loss(batch), batch_size=len(batch["input_ids"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def fit(dm: FederatedDataModule, rounds: int = 2) -> pl.Trainer:
    torch.manual_seed(0)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=[FederatedAveraging()]))
    trainer.fit(TinyLM(), datamodule=dm)
    return trainer


@pytest.mark.parametrize("partitioner", [IIDPartitioner(num_clients=6), QuantitySkewPartitioner(num_clients=6)],
                         ids=["iid", "quantity"])
def test_dict_language_model_batches_train_and_validate_with_label_free_partitioners(partitioner):
    dm = FederatedDataModule(TokenDataset(), TokenDataset(32), partitioner=partitioner, clients_per_round=3,
                             batch_size=8)
    torch.manual_seed(0)
    initial = TinyLM().state_dict()
    trainer = fit(dm, rounds=2)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    trained = trainer.lightning_module.state_dict()
    assert all(not torch.equal(initial[name], trained[name]) for name in initial)


def test_sequence_targets_in_tuples_need_no_labels_with_iid():
    dm = FederatedDataModule(TokenDataset(as_tuples=True), partitioner=IIDPartitioner(num_clients=4),
                             clients_per_round=2, batch_size=8)
    dm.setup("fit")
    assert dm.client_sizes.sum() == 96


@pytest.mark.parametrize(("dataset", "match"), [
    (TokenDataset(), r"DirichletPartitioner needs an integer class label per sample, but dataset\[0\] is a dict with "
                     r"keys \['input_ids', 'labels'\] and 'label\(s\)' = a Tensor of shape \(8,\).*targets.*label_fn"),
    (TokenDataset(as_tuples=True), r"the second element of dataset\[0\] is a Tensor of shape \(8,\).*label_fn"),
])
def test_a_label_skew_partitioner_asks_for_labels_saying_how(dataset, match):
    dm = FederatedDataModule(dataset, partitioner=DirichletPartitioner(num_clients=4, alpha=0.5), clients_per_round=2)
    with pytest.raises(FederatedConfigError, match=match):
        dm.setup("fit")


def first_token(sample: dict[str, torch.Tensor]) -> int:
    return int(sample["input_ids"][0]) % 3


def test_label_fn_gives_a_label_skew_partitioner_its_labels_and_the_report_its_histograms():
    dm = FederatedDataModule(TokenDataset(), partitioner=DirichletPartitioner(num_clients=4, alpha=0.1, seed=0),
                             clients_per_round=2, batch_size=8, label_fn=first_token)
    dm.setup("fit")
    labels = np.array([first_token(TokenDataset()[i]) for i in range(96)])
    np.testing.assert_array_equal(dm.train_labels(), labels)
    report = partition_report(dm.client_indices, dm.train_labels())
    assert report.num_classes == 3 and report.sizes.sum() == 96


def test_the_report_without_labels_gives_client_sizes():
    dm = FederatedDataModule(TokenDataset(), partitioner=QuantitySkewPartitioner(num_clients=4, seed=0),
                             clients_per_round=2)
    dm.setup("fit")
    report = partition_report(dm.client_indices, None)
    assert report.sizes.tolist() == dm.client_sizes.tolist()
    assert report.summary().startswith("4 clients, 96 samples, no class labels; client size min")


def test_a_padding_collator_feeds_ragged_sequences_to_training_and_validation():
    dm = FederatedDataModule(TokenDataset(ragged=True), TokenDataset(32, ragged=True),
                             partitioner=IIDPartitioner(num_clients=4), clients_per_round=2, batch_size=8,
                             collate_fn=pad_collate)
    trainer = fit(dm)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape and (batch["labels"] == -100).any()


def test_drop_last_runs_full_batches_and_refuses_clients_smaller_than_a_batch():
    dm = FederatedDataModule(TokenDataset(), partitioner=QuantitySkewPartitioner(num_clients=4, seed=0, min_size=8),
                             clients_per_round=4, batch_size=8, drop_last=True, local_epochs=2)
    dm.setup("fit")
    plan = dm.plan_round(0)
    assert all(len(b) == 8 for b in plan.batches)
    assert plan.num_batches == sum(2 * (int(n) // 8) for n in dm.client_sizes)
    assert dm.max_client_steps == 2 * (int(dm.client_sizes.max()) // 8)
    small = FederatedDataModule(TokenDataset(), partitioner=QuantitySkewPartitioner(num_clients=4, seed=0, sigma=3.0),
                                clients_per_round=2, batch_size=16, drop_last=True)
    with pytest.raises(FederatedConfigError,
                       match=r"drop_last=True .* batch_size=16, .* clients \[0, 1, 3\] have \[14, 7, 13\] samples"):
        small.setup("fit")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"drop_last": 1}, "drop_last must be True or False, got 1"),
    ({"collate_fn": "pad"}, "collate_fn must be a callable or None, got str"),
    ({"label_fn": 3}, "label_fn must be a callable or None, got int"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(FederatedConfigError, match=match):
        FederatedDataModule(TokenDataset(), **kwargs)
