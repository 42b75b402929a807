"""Heterogeneous phones on the embedded digits: accuracy against simulated time, bytes and energy.

Four strategies on the same 100 "phones" (the built-in heavy-tailed preset, drawn from seed 0: log-normal speed
and bandwidth, availability 0.3-0.9 per round, up to 10% failures, speed jitter), the same data (Dirichlet(0.5)
over 100 clients, 10 per round, 2 local epochs, batch 16) and the same model (``SmallCNN(1, 10, 8, (32, 128))``,
42,762 parameters, client SGD lr 0.05, training FLOPs counted by ``torch.utils.flop_counter``):

1. synchronous FedAvg: the server waits for every selected client (unavailable ones are never selected, failed
   ones are given up when they fail);
2. deadline, drop: rounds end at ``--deadline`` simulated seconds and late clients are dropped;
3. deadline, dynamic work: each client plans as many local steps as fit in the deadline at its nominal speed (at
   least 1), with FedNova normalization; clients slowed by jitter past the deadline are still dropped;
4. FedBuff: buffer of 10 updates, 20 clients in flight, staleness weight 1/sqrt(1+s); one server update counts
   as one "round" in the round budget.

Each runs without compression and with compression (downlink 8-bit stochastic quantization, uplink subsample
0.25 + 2-bit; tensors under 1024 values travel as float32). Printed: accuracy (mean of the last 3 rounds), the
first round whose validation accuracy reaches 85% and the simulated seconds, bytes (every byte of the simulated
network, downloads of dropped and failed clients included) and energy (joules, all clients) spent until then, and
the totals over the run. The PNG plots validation accuracy against simulated seconds.

    .venv/bin/python benchmarks/systems.py                  # about 1 minute on 2 cores
    .venv/bin/python benchmarks/systems.py --rounds 200 --deadline 1.5
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_fl import (
    ClassifierModule,
    FedBuff,
    FederatedAveraging,
    FederatedDataModule,
    SystemsSimulation,
    federated_trainer_defaults,
)
from lightning_fl.callbacks import SimulatedDevices
from lightning_fl.codecs import Chain, StochasticQuantizer, Subsample
from lightning_fl.datamodules import DirichletPartitioner, load_digits_dataset
from lightning_fl.nn import SmallCNN

TARGET = 0.85
DIGITS = load_digits_dataset(val_fraction=0.2, seed=0)
RESULTS = Path(__file__).resolve().parent / "results"


class ValAccuracy(pl.Callback):
    """Records ``val/acc`` after every validation of the fit (sanity check excluded)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics["val/acc"]))


@dataclass
class Result:
    """One run: accuracy and cumulative simulated cost after every round."""

    acc: list[float]
    seconds: list[float]
    sim_bytes: list[float]
    energy: list[float]
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def final(self) -> float:
        tail = self.acc[-3:]
        return sum(tail) / len(tail)

    def at_target(self) -> tuple[str, str, str, str]:
        hit = [i for i, a in enumerate(self.acc) if a >= TARGET]
        if not hit:
            return "-", "-", "-", "-"
        i = hit[0]
        return str(i + 1), f"{self.seconds[i]:.2f}", f"{self.sim_bytes[i] / 1e6:.2f}", f"{self.energy[i]:.2f}"


def strategies(deadline: float) -> dict[str, object]:
    return {
        "synchronous FedAvg": lambda: SystemsSimulation("phones"),
        "deadline, drop": lambda: SystemsSimulation("phones", deadline=deadline),
        "deadline, dynamic work + FedNova": lambda: SystemsSimulation(
            "phones", deadline=deadline, dynamic_work=True, fednova=True
        ),
        "FedBuff (K=10, 20 in flight)": lambda: FedBuff(buffer_size=10, concurrency=20, profiles="phones"),
    }


def run(make_sim, rounds: int, compressed: bool) -> Result:
    train, val = DIGITS
    dm = FederatedDataModule(train, val, partitioner=DirichletPartitioner(num_clients=100, alpha=0.5, seed=0),
                             clients_per_round=10, batch_size=16, local_epochs=2, seed=0)
    torch.manual_seed(0)
    module = ClassifierModule(backbone=SmallCNN(1, 10, 8, (32, 128)), lr=0.05, log_train_loss=False)
    codecs = {"downlink": StochasticQuantizer(bits=8), "uplink": Chain(Subsample(0.25), StochasticQuantizer(bits=2))}
    fedavg = FederatedAveraging(**codecs) if compressed else FederatedAveraging()  # type: ignore[arg-type]
    sim: SimulatedDevices = make_sim()
    acc = ValAccuracy()
    trainer = pl.Trainer(
        **federated_trainer_defaults(
            max_epochs=rounds, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
            callbacks=[fedavg, sim, acc],
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm)
    hist = sim.history
    extra = {
        "payload_bytes": float(fedavg.uplink_bytes_total + fedavg.downlink_bytes_total),
        "flops_per_sample": float(sim.flops_per_sample or 0.0),
    }
    for key in ("fl/dropped", "fl/failed", "fl/stragglers", "fl/staleness_mean"):
        if key in hist[0]:
            extra[key] = sum(h[key] for h in hist) / (len(hist) if key == "fl/staleness_mean" else 1)
    return Result(acc.values, [h["fl/sim_seconds_total"] for h in hist], [h["fl/sim_bytes_total"] for h in hist],
                  [h["fl/energy_joules_total"] for h in hist], extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=60, help="rounds (FedBuff: server updates) per run")
    parser.add_argument("--deadline", type=float, default=1.0, help="simulated seconds per synchronous round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--png", type=Path, default=RESULTS / "systems_phones.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    wall = time.perf_counter()
    print(f"digits, 100 phones, 10 per round, {args.rounds} rounds, deadline {args.deadline:g} s\n", flush=True)
    print("| strategy | compression | final acc | rounds to 85% | sim s to 85% | MB to 85% | J to 85% | "
          "sim s total | MB total | J total | dropped / failed |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    results: dict[tuple[str, bool], Result] = {}
    for compressed in (False, True):
        for name, make_sim in strategies(args.deadline).items():
            r = results[(name, compressed)] = run(make_sim, args.rounds, compressed)
            rounds, seconds, mb, joules = r.at_target()
            lost = "-" if "fl/dropped" not in r.extra else f"{r.extra['fl/dropped']:.0f} / {r.extra['fl/failed']:.0f}"
            if "fl/staleness_mean" in r.extra:
                lost = f"staleness {r.extra['fl/staleness_mean']:.2f}"
            print(f"| {name} | {'8-bit down, 0.25 x 2-bit up' if compressed else 'none'} | {r.final:.3f} | "
                  f"{rounds} | {seconds} | {mb} | {joules} | {r.seconds[-1]:.2f} | {r.sim_bytes[-1] / 1e6:.2f} | "
                  f"{r.energy[-1]:.2f} | {lost} |", flush=True)
    print(f"\ncounted training FLOPs per sample: {next(iter(results.values())).extra['flops_per_sample']:.0f}")
    plot(results, args.png)
    print(f"plot: {args.png}\nwall time {time.perf_counter() - wall:.0f} s", flush=True)


def plot(results: dict[tuple[str, bool], Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, compressed in zip(axes, (False, True), strict=True):
        for (name, comp), r in results.items():
            if comp == compressed:
                ax.plot(r.seconds, r.acc, label=name)
        ax.axhline(TARGET, color="grey", lw=0.5, ls="--")
        ax.set_xlabel("simulated seconds")
        ax.set_title("with compression" if compressed else "no compression")
        ax.set_ylim(0.0, 1.0)
    axes[0].set_ylabel("validation accuracy")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("digits, 100 phones (heavy-tailed preset), 10 clients per round")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
