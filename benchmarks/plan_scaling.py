"""Cost of a round's plan as the number of clients grows: setup seconds, milliseconds to plan a round, memory.

IID clients over synthetic samples (4 samples a client at 1,000,000 clients over 4M samples). Setup (loading and
partitioning) may cost O(num_clients); planning a round (sampling its clients, spreading them over ranks, listing
their batches) must cost O(clients_per_round), and the data module's memory must be the index arrays plus a few
bytes per client. Memory is measured with ``tracemalloc`` in a second, traced setup (the dataset's own tensors
excluded); times are measured untraced.

    .venv/bin/python benchmarks/plan_scaling.py [--clients 10000 1000000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc

import torch

from lightning_fl import FederatedDataModule
from lightning_fl.datamodules import IIDPartitioner, InMemoryDataset

SAMPLES_PER_CLIENT = 4


def synthetic(num_samples: int) -> InMemoryDataset:
    """``num_samples`` one-feature samples with labels in [0, 10) (seeded)."""
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(num_samples, 1, generator=gen)
    return InMemoryDataset(inputs, torch.randint(0, 10, (num_samples,), generator=gen))


def make_dm(data: InMemoryDataset, num_clients: int, sampling: str) -> FederatedDataModule:
    return FederatedDataModule(
        data,
        partitioner=IIDPartitioner(num_clients=num_clients, seed=0),
        clients_per_round=10,
        batch_size=16,
        client_sampling=sampling,  # type: ignore[arg-type]
        seed=0,
    )


def plan_ms(dm: FederatedDataModule, clients_per_round: int, rounds: int) -> float:
    """Median milliseconds of ``dm.plan_round`` over ``rounds`` fresh rounds (after one warm-up round)."""
    dm.clients_per_round = clients_per_round
    dm.plan_round(10_000)
    times = []
    for r in range(rounds):
        start = time.perf_counter()
        dm.plan_round(r)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def memory_mib(data: InMemoryDataset, num_clients: int, sampling: str, rounds: int) -> tuple[float, float]:
    """MiB that setup and a first round's plan allocate (what the data module keeps: its index arrays and whatever it
    caches for sampling), and the peak of the next ``rounds`` round plans above it."""
    gc.collect()
    tracemalloc.start()
    dm = make_dm(data, num_clients, sampling)
    dm.setup("fit")
    dm.plan_round(0)
    retained, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for r in range(1, rounds + 1):
        dm.plan_round(r)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del dm
    return retained / 2**20, (peak - retained) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sampling", nargs="+", default=["uniform", "size"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"| clients | samples | sampling | setup s | plan ms/round, 10 clients | plan ms/round, 100 clients | "
        f"data module MiB | of which int64 indices | plan peak MiB above it |  (median of {args.rounds} rounds)"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for num_clients in args.clients:
        num_samples = SAMPLES_PER_CLIENT * num_clients
        data = synthetic(num_samples)
        for sampling in args.sampling:
            gc.collect()
            start = time.perf_counter()
            dm = make_dm(data, num_clients, sampling)
            dm.setup("fit")
            setup_s = time.perf_counter() - start
            ms10, ms100 = plan_ms(dm, 10, args.rounds), plan_ms(dm, 100, args.rounds)
            del dm
            retained, plan_peak = memory_mib(data, num_clients, sampling, rounds=5)
            print(
                f"| {num_clients:,} | {num_samples:,} | {sampling} | {setup_s:.1f} | {ms10:.2f} | {ms100:.2f} | "
                f"{retained:.1f} | {num_samples * 8 / 2**20:.1f} | {plan_peak:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
