"""Milliseconds per round: lightning-fl versus a hand-written plain-torch FedAvg loop on identical work.

Both run the same clients, batches and seeds in one process on the CPU (no validation, no logging, no
checkpoints in either), so the difference is the framework's overhead. Then the memory of the data module with
100 and with 10,000 clients on synthetic data.

    .venv/bin/python benchmarks/round_overhead.py [--rounds 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import time
import tracemalloc
import warnings

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_fl import ClassifierModule, FederatedAveraging, FederatedDataModule, federated_trainer_defaults
from lightning_fl.datamodules import DirichletPartitioner, InMemoryDataset, load_digits_dataset
from lightning_fl.datamodules.plan import client_batches, sample_clients
from lightning_fl.nn import MLP

warnings.filterwarnings("ignore")


class RoundTimer(pl.Callback):
    """Wall time from the first round's start to the last round's end (excludes Trainer setup)."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:  # round 0 is warm-up
            self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.end = time.perf_counter()


def lightning_ms_per_round(backbone: nn.Module, dm: FederatedDataModule, rounds: int, federated: bool = True) -> float:
    """lightning-fl's round; with ``federated=False`` the same batches through a plain Lightning fit (no client
    swaps, no aggregation): Lightning's own cost per batch, the floor for any callback-based design."""
    model = ClassifierModule(backbone=backbone, lr=0.05, log_train_loss=False)
    if not federated:  # the floor has no server on purpose: say so, or the data module refuses the fit
        model.uses_weight_averaging = False
    timer = RoundTimer()
    callbacks: list[pl.Callback] = [FederatedAveraging(), timer] if federated else [timer]
    trainer = pl.Trainer(
        **federated_trainer_defaults(
            max_epochs=rounds + 1,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            callbacks=callbacks,
        )
    )
    trainer.fit(model, datamodule=dm)
    return (timer.end - timer.start) / rounds * 1000


def plain_ms_per_round(backbone: nn.Module, dm: FederatedDataModule, rounds: int) -> float:
    """FedAvg as one would write it by hand: load global, fresh optimizer, train, accumulate, average."""
    model = copy.deepcopy(backbone)
    x, y = dm.train_dataset.tensors
    sizes = dm.client_sizes
    params = list(model.parameters())
    global_w = [p.detach().clone() for p in params]
    start = None
    for round_idx in range(rounds + 1):
        if round_idx == 1:
            start = time.perf_counter()
        clients = sample_clients(round_idx, sizes, dm.clients_per_round, "uniform", dm.seed)
        acc = [torch.zeros_like(w) for w in global_w]
        total = 0.0
        for c in clients:
            with torch.no_grad():
                for p, w in zip(params, global_w, strict=False):
                    p.copy_(w)
            opt = torch.optim.SGD(params, lr=0.05)
            for b in client_batches(
                dm.client_indices[c], dm.batch_size, dm.local_epochs, True, dm.seed, round_idx, int(c)
            ):
                index = torch.from_numpy(b)
                opt.zero_grad()
                F.cross_entropy(model(x[index]), y[index]).backward()
                opt.step()
            with torch.no_grad():
                for a, p, w in zip(acc, params, global_w, strict=False):
                    a.add_(p - w, alpha=float(sizes[c]))
            total += float(sizes[c])
        with torch.no_grad():
            for w, a in zip(global_w, acc, strict=False):
                w.add_(a / total)
    assert start is not None
    return (time.perf_counter() - start) / rounds * 1000


def digits_dm() -> FederatedDataModule:
    train, _ = load_digits_dataset(val_fraction=0.2, seed=0)
    dm = FederatedDataModule(
        train,
        partitioner=DirichletPartitioner(num_clients=100, alpha=0.5, seed=0),
        clients_per_round=10,
        batch_size=16,
        local_epochs=1,
        seed=0,
    )
    dm.setup("fit")
    return dm


def data_module_memory(num_clients: int, num_samples: int = 200_000, rounds: int = 5) -> tuple[float, float]:
    """MiB allocated by partitioning and planning rounds (the dataset's own tensors excluded): the peak, and what
    stays allocated afterwards (the client index lists)."""
    gen = torch.Generator().manual_seed(0)
    data = InMemoryDataset(
        torch.randn(num_samples, 16, generator=gen), torch.randint(0, 10, (num_samples,), generator=gen)
    )
    tracemalloc.start()
    dm = FederatedDataModule(
        data,
        partitioner=DirichletPartitioner(num_clients=num_clients, alpha=0.5, seed=0),
        clients_per_round=10,
        batch_size=16,
    )
    dm.setup("fit")
    for r in range(rounds):
        for _ in dm.plan_round(r).batches:
            pass
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del dm
    return peak / 2**20, retained / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=4, help="interleaved repeats; the best of each is shown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workloads = {
        "digits MLP 64-128-10": lambda: MLP(64, [128], 10),
        "MLP 64-1024-1024-10": lambda: MLP(64, [1024, 1024], 10),
    }
    print(
        f"| workload | params | plain torch ms/round | Lightning alone, same batches | lightning-fl ms/round | "
        f"ratio to plain |  ({args.threads} threads, {args.rounds} rounds after 1 warm-up, "
        f"best of {args.repeats}, interleaved)"
    )
    print("|---|---|---|---|---|---|")
    for name, make in workloads.items():
        torch.manual_seed(0)
        backbone = make()
        n_params = sum(p.numel() for p in backbone.parameters())
        times: dict[str, list[float]] = {"plain": [], "floor": [], "fl": []}
        for _ in range(args.repeats):  # interleaved, so a noisy neighbour slows all three alike; best of each
            times["plain"].append(plain_ms_per_round(backbone, digits_dm(), args.rounds))
            times["floor"].append(
                lightning_ms_per_round(copy.deepcopy(backbone), digits_dm(), args.rounds, federated=False)
            )
            times["fl"].append(lightning_ms_per_round(copy.deepcopy(backbone), digits_dm(), args.rounds))
        plain, floor, fl = (min(times[k]) for k in ("plain", "floor", "fl"))
        print(f"| {name} | {n_params:,} | {plain:.1f} | {floor:.1f} | {fl:.1f} | {fl / plain:.2f}x |")
    print()
    print("| clients | samples | peak MiB (partition + 5 round plans) | retained MiB | of which int64 indices |")
    print("|---|---|---|---|---|")
    for k in (100, 10_000):
        peak, retained = data_module_memory(k)
        print(f"| {k:,} | 200,000 | {peak:.1f} | {retained:.1f} | {200_000 * 8 / 2**20:.1f} |")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
