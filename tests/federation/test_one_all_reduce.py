"""One all-reduce per round on two processes: the aggregator's sums, the integer-buffer increments, the round's
counters and Scaffold's control-variate sum all travel in it. A plain Trainer, no federated flags."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from conftest import TinyClassifier, make_tiny_data

from lightning_fl import FederatedAveraging, FederatedDataModule, FederatedDDPStrategy, Scaffold
from lightning_fl.codecs import StochasticQuantizer
from lightning_fl.datamodules import IIDPartitioner
from lightning_fl.datamodules.loaders import round_plan_of

ROUNDS = 3


class CountAllReduces(pl.Callback):
    """Wraps ``torch.distributed.all_reduce`` in each process and counts the calls made from lightning_fl code
    (Lightning's own collectives are not counted), per round, up to the round's last batch."""

    def __init__(self, out: Path) -> None:
        self.out = str(out)
        self.per_round: list[int] = []
        self.rank_clients: list[list[int]] = []
        self._count = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        original = dist.all_reduce

        def counted(*args: Any, **kwargs: Any) -> Any:
            if str(sys._getframe(1).f_globals.get("__name__", "")).startswith("lightning_fl."):
                self._count += 1
            return original(*args, **kwargs)

        self._original = original
        dist.all_reduce = counted  # type: ignore[assignment]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._count = 0
        self.rank_clients.append(list(round_plan_of(trainer).rank_clients))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx == round_plan_of(trainer).num_batches - 1:  # after the server callback closed the round
            self.per_round.append(self._count)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dist.all_reduce = self._original  # type: ignore[assignment]
        record = {"per_round": self.per_round, "rank_clients": self.rank_clients,
                  "weights": [float(p.detach().double().sum()) for p in pl_module.parameters()]}
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


@pytest.mark.distributed
def test_one_all_reduce_per_round_on_two_processes(tmp_path):
    torch.manual_seed(0)
    dm = FederatedDataModule(make_tiny_data(96, seed=0), partitioner=IIDPartitioner(num_clients=6, seed=0),
                             clients_per_round=4, batch_size=8, seed=3)
    trainer = pl.Trainer(max_epochs=ROUNDS, accelerator="cpu", devices=2,
                         strategy=FederatedDDPStrategy(start_method="spawn"),
                         callbacks=[FederatedAveraging(uplink=StochasticQuantizer(bits=4)), Scaffold(),
                                    CountAllReduces(tmp_path)],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(TinyClassifier(batchnorm=True, momentum=0.0), datamodule=dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["per_round"] for r in ranks] == [[1] * ROUNDS, [1] * ROUNDS]
    # clients are pinned (Scaffold keeps per-client state) and no sampler reordered them
    for rank, record in enumerate(ranks):
        assert all(c % 2 == rank for clients in record["rank_clients"] for c in clients)
    assert ranks[0]["weights"] == ranks[1]["weights"]  # one global model on both ranks
