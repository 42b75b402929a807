"""The runtime sums the integer-buffer increments and the round's counters in its own states, not in the
aggregator's side vector: the aggregator is bound with no ``extra``, and BatchNorm's counter still advances by the
round's batches."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, make_tiny_data

from lightning_fl import FederatedAveraging, FederatedDataModule
from lightning_fl.datamodules import IIDPartitioner
from lightning_fl.server import WeightedMeanAggregator


class RecordingMean(WeightedMeanAggregator):
    """Records the length of its side vector and the ``extra`` each update came with."""

    def __init__(self) -> None:
        super().__init__()
        self.extra_lengths: list[int] = []
        self.update_extras: list[torch.Tensor | None] = []

    def update(self, delta: torch.Tensor, weight: float, extra: torch.Tensor | None = None,
               coverage: torch.Tensor | None = None) -> None:
        self.update_extras.append(extra)
        super().update(delta, weight, extra, coverage)

    def compute(self, denominator: float | None = None) -> torch.Tensor:
        self.extra_lengths.append(self.extras.numel())
        return super().compute(denominator)


def test_runtime_keeps_its_sums_out_of_the_aggregator() -> None:
    torch.manual_seed(0)
    # 96 samples, 6 IID clients of 16, batches of 8: each client runs 2 batches, 4 clients a round -> 8 a round
    dm = FederatedDataModule(make_tiny_data(96, seed=0), partitioner=IIDPartitioner(num_clients=6, seed=0),
                             clients_per_round=4, batch_size=8, seed=3)
    aggregator = RecordingMean()
    server = FederatedAveraging(aggregator=aggregator)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, callbacks=[server], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    model = TinyClassifier(batchnorm=True, momentum=0.0)
    trainer.fit(model, datamodule=dm)
    assert aggregator.extra_lengths == [0, 0]
    assert len(aggregator.update_extras) == 8 and all(extra is None for extra in aggregator.update_extras)
    assert int(model.net[1].num_batches_tracked) == 16
    assert [(r["fl/clients"], r["fl/rejected_updates"]) for r in server.totals.history] == [(4.0, 0.0)] * 2
    assert all(r["fl/uplink_bytes"] > 0 and r["fl/downlink_bytes"] > 0 for r in server.totals.history)
