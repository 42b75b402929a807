"""Federated algorithms on the embedded digits: accuracy under label skew, under attack, and under privacy.

Three tables, every run from the same seeds (model ``MLP(64, [128], 10)``, client SGD lr 0.05 without momentum,
batch 16; accuracy on the held-out 20% of the digits). Round counts are short so that all three tables run in well
under 15 minutes on 2 cores (150 s measured on idle cores, about 3x that on busy ones); ``--rounds`` and friends
make longer runs:

1. Label skew (50 rounds): Dirichlet alpha in {0.1, 0.5, 100} over 20 clients (over 100 clients, Dirichlet(0.1)
   leaves digits clients empty), 5 clients per round, 5 local epochs; FedAvg, FedAvgM (server momentum 0.9), FedAdam
   (server lr 0.01), FedProx (mu 0.1), SCAFFOLD and FedPer (the last layer
   stays local). Global accuracy is the mean of the last 3 rounds' ``val/acc``; personalized accuracy is the mean
   over clients of each client's accuracy on its own held-out 20% after 5 local fine-tuning steps from the final
   global model (FedPer: with its own head); "rounds to 85%" is the first round whose global accuracy reaches 0.85.
2. Robustness (30 rounds): 0, 10, 20, 30% malicious clients (they send -4x their update) among 20 clients,
   Dirichlet(0.5), 10 per round, 1 local epoch; FedAvg, coordinate-wise median, trimmed mean (beta 0.3) and norm
   clipping at 0.4 (about the median honest update norm); accuracy is the mean of the last 3 rounds.
3. Differential privacy (DP-FedAvg, 30 rounds): 100 IID clients, 50 per round (q = 0.5), 3 local epochs, the
   smaller ``MLP(64, [32], 10)``, updates clipped to L2 norm 0.3 (median honest norm 0.18); noise multiplier z
   versus epsilon at delta 1e-5 (Opacus RDP accountant) versus accuracy.

    .venv/bin/python benchmarks/algorithms.py               # ~15 min on 2 cores
    .venv/bin/python benchmarks/algorithms.py --quick       # a few minutes, fewer rounds
    .venv/bin/python benchmarks/algorithms.py --tables skew --rounds 100
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch

from lightning_fl import (
    ClassifierModule,
    DifferentialPrivacy,
    FederatedAlgorithm,
    FederatedAveraging,
    FederatedDataModule,
    FedProx,
    MaliciousClients,
    PersonalizedEvaluation,
    PersonalLayers,
    Scaffold,
    federated_trainer_defaults,
)
from lightning_fl.datamodules import DirichletPartitioner, IIDPartitioner, load_digits_dataset
from lightning_fl.nn import MLP
from lightning_fl.server import (
    Aggregator,
    CoordinateMedianAggregator,
    NormClippingAggregator,
    ServerAdam,
    ServerOptimizer,
    ServerSGD,
    TrimmedMeanAggregator,
)

TARGET = 0.85
LAST_ROUNDS = 3
HEAD = "backbone.3"  # the MLP's last Linear: FedPer's personal layer


@dataclass
class Setting:
    """One federated run: data split, server side and algorithm callbacks."""

    rounds: int
    partitioner: Callable[[], object]
    clients_per_round: int
    local_epochs: int = 1
    server_optimizer: Callable[[], ServerOptimizer] = lambda: ServerSGD(lr=1.0)
    aggregator: Callable[[], Aggregator | None] = lambda: None
    algorithms: Callable[[], list[FederatedAlgorithm]] = list
    personal: bool = False
    hidden: tuple[int, ...] = (128,)


@dataclass
class Result:
    """What a run reached."""

    acc: float
    curve: list[float]
    personal: float | None = None
    epsilon: float | None = None
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rounds_to_target(self) -> str:
        hit = [i for i, a in enumerate(self.curve) if a >= TARGET]
        return str(hit[0] + 1) if hit else "-"


class ValAccuracy(pl.Callback):
    """Records ``val/acc`` after every validation of the fit (sanity check excluded)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics["val/acc"]))


DIGITS = load_digits_dataset(val_fraction=0.2, seed=0)


def run(setting: Setting) -> Result:
    """Train one federated run and return its accuracies."""
    start = time.perf_counter()
    train, val = DIGITS
    dm = FederatedDataModule(
        train, val, partitioner=setting.partitioner(), clients_per_round=setting.clients_per_round,  # type: ignore[arg-type]
        batch_size=16, local_epochs=setting.local_epochs, local_val_fraction=0.2 if setting.personal else 0.0, seed=0,
    )
    torch.manual_seed(0)
    module = ClassifierModule(backbone=MLP(64, list(setting.hidden), 10), lr=0.05, log_train_loss=False)
    fedavg = FederatedAveraging(server_optimizer=setting.server_optimizer(), aggregator=setting.aggregator())
    algorithms = setting.algorithms()
    evaluation = PersonalizedEvaluation(every_n_rounds=setting.rounds, finetune_steps=5) if setting.personal else None
    val_acc = ValAccuracy()
    callbacks: list[pl.Callback] = [fedavg, *algorithms, val_acc] + ([evaluation] if evaluation else [])
    trainer = pl.Trainer(
        **federated_trainer_defaults(
            max_epochs=setting.rounds, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
        )
    )
    trainer.fit(module, datamodule=dm)
    tail = val_acc.values[-LAST_ROUNDS:]
    dp = next((a for a in algorithms if isinstance(a, DifferentialPrivacy)), None)
    return Result(
        acc=sum(tail) / len(tail),
        curve=val_acc.values,
        personal=evaluation.history[-1]["personal/acc"] if evaluation and evaluation.history else None,
        epsilon=dp.epsilon if dp is not None else None,
        seconds=time.perf_counter() - start,
    )


def skew_table(rounds: int) -> None:
    methods: dict[str, dict[str, object]] = {
        "FedAvg": {},
        "FedAvgM": {"server_optimizer": lambda: ServerSGD(lr=1.0, momentum=0.9)},
        "FedAdam": {"server_optimizer": lambda: ServerAdam(lr=0.01)},
        "FedProx": {"algorithms": lambda: [FedProx(mu=0.1)]},
        "SCAFFOLD": {"algorithms": lambda: [Scaffold()]},
        "FedPer": {"algorithms": lambda: [PersonalLayers([HEAD])]},
    }
    print(f"\n### Label skew ({rounds} rounds, 20 clients, 5 per round, 5 local epochs)\n", flush=True)
    print("| alpha | method | global acc | personalized acc | rounds to 85% | s |", flush=True)
    print("|---|---|---|---|---|---|", flush=True)
    for alpha in (0.1, 0.5, 100.0):
        for name, kwargs in methods.items():
            setting = Setting(
                rounds=rounds, partitioner=lambda a=alpha: DirichletPartitioner(num_clients=20, alpha=a, seed=0),
                clients_per_round=5, local_epochs=5, personal=True, **kwargs,  # type: ignore[arg-type]
            )
            r = run(setting)
            note = " (untrained global head)" if name == "FedPer" else ""
            print(
                f"| {alpha:g} | {name} | {r.acc:.3f}{note} | {r.personal:.3f} | {r.rounds_to_target} | "
                f"{r.seconds:.0f} |",
                flush=True,
            )


def robustness_table(rounds: int, clip_norm: float) -> None:
    aggregators: dict[str, Callable[[], Aggregator | None]] = {
        "FedAvg (mean)": lambda: None,
        "median": CoordinateMedianAggregator,
        "trimmed mean (0.3)": lambda: TrimmedMeanAggregator(beta=0.3),
        f"norm clipping ({clip_norm:g})": lambda: NormClippingAggregator(max_norm=clip_norm),
    }
    fractions = (0.0, 0.1, 0.2, 0.3)
    print(
        f"\n### Robustness ({rounds} rounds, 20 clients, Dirichlet(0.5), 10 per round, malicious clients send -4x "
        "their update; global acc)\n",
        flush=True,
    )
    print("| aggregator | " + " | ".join(f"{f:.0%} malicious" for f in fractions) + " |", flush=True)
    print("|---|" + "---|" * len(fractions), flush=True)
    for name, aggregator in aggregators.items():
        cells = []
        for fraction in fractions:
            setting = Setting(
                rounds=rounds, partitioner=lambda: DirichletPartitioner(num_clients=20, alpha=0.5, seed=0),
                clients_per_round=10, aggregator=aggregator,
                algorithms=lambda f=fraction: [MaliciousClients(fraction=f, attack="sign_flip", scale=4.0)] * (f > 0),
            )
            cells.append(f"{run(setting).acc:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def privacy_table(rounds: int, clip_norm: float) -> None:
    print(
        f"\n### Differential privacy ({rounds} rounds, 100 IID clients, 50 per round (q = 0.5), 3 local epochs, "
        f"MLP(64, [32], 10), clip C = {clip_norm:g}, delta = 1e-5)\n",
        flush=True,
    )
    print("| noise multiplier z | epsilon | global acc |\n|---|---|---|", flush=True)

    def setting(algorithms: Callable[[], list[FederatedAlgorithm]]) -> Setting:
        return Setting(rounds=rounds, partitioner=lambda: IIDPartitioner(num_clients=100, seed=0), clients_per_round=50,
                       local_epochs=3, hidden=(32,), algorithms=algorithms)

    r = run(setting(list))
    print(f"| no DP (no clipping) | - | {r.acc:.3f} |", flush=True)
    for z in (0.0, 0.5, 1.0, 2.0):
        r = run(setting(lambda z=z: [DifferentialPrivacy(clip_norm=clip_norm, noise_multiplier=z, delta=1e-5)]))
        eps = "inf" if r.epsilon is None or r.epsilon == float("inf") else f"{r.epsilon:.2f}"
        print(f"| {z:g} | {eps} | {r.acc:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50, help="rounds of the label-skew table")
    parser.add_argument("--robust-rounds", type=int, default=30)
    parser.add_argument("--dp-rounds", type=int, default=30)
    parser.add_argument("--clip-norm", type=float, default=0.4, help="max_norm of the norm-clipping aggregator")
    parser.add_argument("--dp-clip-norm", type=float, default=0.3, help="C of differential privacy")
    parser.add_argument("--tables", nargs="+", choices=("skew", "robust", "dp"), default=["skew", "robust", "dp"])
    parser.add_argument("--quick", action="store_true", help="a third of the rounds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    scale = 3 if args.quick else 1
    wall = time.perf_counter()
    print(f"digits, client SGD lr 0.05, batch 16, {args.threads} threads", flush=True)
    if "skew" in args.tables:
        skew_table(max(2, args.rounds // scale))
    if "robust" in args.tables:
        robustness_table(max(2, args.robust_rounds // scale), args.clip_norm)
    if "dp" in args.tables:
        privacy_table(max(2, args.dp_rounds // scale), args.dp_clip_norm)
    print(f"\nwall time {time.perf_counter() - wall:.0f} s", flush=True)


if __name__ == "__main__":
    main()
