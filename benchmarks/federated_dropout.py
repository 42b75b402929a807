"""Federated Dropout on the embedded digits: accuracy, bytes and client compute against the keep fraction, then the
full Caldas et al. (2018) pipeline (Federated Dropout + Kashin-quantized downlink + quantized uplink) against FedAvg.

Task (as benchmarks/caldas_grid.py): 100 clients, Dirichlet(0.5) label skew, 10 clients per round, batch 16,
1 local epoch, SGD lr 0.05, server SGD lr 1, ``TensorPolicy(min_numel=1024)``. Each client draws its own kept units
(``per="client"``). Accuracy = mean ``val/acc`` of the last 5 rounds (held-out 20% of the digits), averaged over the
seeds. Bytes per round = all 10 clients, headers and seeds included, as ``fl/*_bytes`` measures them. Client
s/round = wall time between a client's first batch (after its model is in place) and its last optimizer step,
summed over the round's clients (measured in the Trainer, 1 thread; on digits a client takes one or two steps, so
Lightning's per-step bookkeeping dominates it). Step ms = median time of one SGD step (forward, backward, update,
batch 16) of the submodel outside the Trainer: the compute itself. Client FLOPs = training FLOPs (forward +
backward) of one sample through the submodel, measured with ``torch.utils.flop_counter``.

    .venv/bin/python benchmarks/federated_dropout.py                 # both models, 2 seeds, 100 rounds: ~12 min
    .venv/bin/python benchmarks/federated_dropout.py --quick         # 1 seed, 30 rounds
    .venv/bin/python benchmarks/federated_dropout.py --only-pipeline --local-epochs 5 --min-numel 64 --raw '*running_*'
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from caldas_grid import ValAccuracy  # the same val/acc recorder (this script's folder is on the path)
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_fl import (
    ClassifierModule,
    FederatedAveraging,
    FederatedDataModule,
    FederatedDropout,
    federated_trainer_defaults,
)
from lightning_fl.algorithms.federated_dropout.submodel import module_tensors
from lightning_fl.codecs import Chain, Codec, Kashin, StochasticQuantizer, Subsample, TensorPolicy
from lightning_fl.datamodules import DirichletPartitioner, load_digits_dataset
from lightning_fl.nn import MLP, ShrunkModule, SmallCNN, SubmodelPlan, find_dropout_groups

MODELS: dict[str, Callable[[], nn.Module]] = {
    "cnn": lambda: SmallCNN(1, 10, 8, (32, 128)),  # 42,762 parameters (as in caldas_grid.py)
    "mlp": lambda: MLP(64, [256, 256], 10),  # 85,002 parameters
}
INPUTS = {"cnn": (1, 1, 8, 8), "mlp": (1, 64), "cifar_cnn": (1, 3, 32, 32), "mlp_1024": (1, 64)}
# Larger models, timed only (one SGD step outside the Trainer), where compute rather than per-op overhead dominates.
STEP_MODELS: dict[str, Callable[[], nn.Module]] = {
    "cifar_cnn": lambda: SmallCNN(3, 10, 32, (64, 128)),  # CIFAR-shaped input, 3x32x32
    "mlp_1024": lambda: MLP(64, [1024, 1024], 10),
}
KEEPS = (1.0, 0.875, 0.75, 0.625, 0.5)
LAST_ROUNDS = 5


@dataclass
class Result:
    acc: float
    down_bytes: float
    up_bytes: float
    down_ratio: float
    up_ratio: float
    client_seconds: float
    flops_per_sample: float
    step_ms: float


class ClientClock:
    """Times each client's training only: from after the server callback put its model in place to before the
    server callback takes its update (two callbacks around FederatedAveraging)."""

    def __init__(self, fedavg: FederatedAveraging) -> None:
        self.fedavg = fedavg
        self.per_round: list[float] = []
        self._start = 0.0
        self._round = 0.0
        clock = self

        class After(pl.Callback):  # placed after FederatedAveraging: runs after the client's model is loaded
            def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                clock._round = 0.0

            def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                     batch_idx: int) -> None:
                if clock.fedavg.round_cursor.is_first(batch_idx):
                    clock._start = time.perf_counter()

            def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                clock.per_round.append(clock._round)

        class Before(pl.Callback):  # placed before FederatedAveraging: runs before the update is taken
            def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                   batch: Any, batch_idx: int) -> None:
                if clock.fedavg.round_cursor.is_last(batch_idx):
                    clock._round += time.perf_counter() - clock._start

        self.before, self.after = Before(), After()


def training_flops_per_sample(model: str, keep: float) -> float:
    """Forward + backward FLOPs of one sample through a submodel keeping ``keep`` (measured)."""
    torch.manual_seed(0)
    net = MODELS[model]()
    x = torch.randn(*INPUTS[model])
    counter = FlopCounterMode(display=False)
    if keep < 1.0:
        plan = SubmodelPlan(net, find_dropout_groups(net), keep)
        with ShrunkModule(plan, module_tensors(net)).applied(plan.choose(torch.Generator().manual_seed(0))), counter:
            net(x).sum().backward()
    else:
        with counter:
            net(x).sum().backward()
    return float(counter.get_total_flops())


SETTINGS: dict[str, Any] = {"local_epochs": 1, "min_numel": 1024, "raw": []}  # set from the command line


def step_milliseconds(model: str, keep: float, batch: int = 16, repeats: int = 60) -> float:
    """Median wall time of one local SGD step (forward, backward, update) on a batch, submodel vs full model:
    the client's compute without the Trainer's per-step bookkeeping."""
    torch.manual_seed(0)
    net = {**MODELS, **STEP_MODELS}[model]()
    x, y = torch.randn(batch, *INPUTS[model][1:]), torch.randint(0, 10, (batch,))
    plan = SubmodelPlan(net, find_dropout_groups(net), keep)
    shrunk = ShrunkModule(plan, module_tensors(net))
    times = []
    with shrunk.applied(plan.choose(torch.Generator().manual_seed(0))) if keep < 1.0 else _nothing():
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        for _ in range(repeats):
            start = time.perf_counter()
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            times.append(time.perf_counter() - start)
    times.sort()
    return 1000 * times[len(times) // 2]


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def run(model: str, rounds: int, seed: int, keep: float, downlink: Codec | None, uplink: Codec | None) -> Result:
    train, val = load_digits_dataset(val_fraction=0.2, seed=0)
    dm = FederatedDataModule(train, val, partitioner=DirichletPartitioner(num_clients=100, alpha=0.5, seed=0),
                             clients_per_round=10, batch_size=16, local_epochs=SETTINGS["local_epochs"], seed=seed)
    torch.manual_seed(seed)
    module = ClassifierModule(backbone=MODELS[model](), lr=0.05, log_train_loss=False)
    fedavg = FederatedAveraging(downlink=downlink, uplink=uplink, policy=TensorPolicy(min_numel=SETTINGS["min_numel"],
                                                                                  exclude=SETTINGS["raw"]))
    clock, val_acc = ClientClock(fedavg), ValAccuracy()
    callbacks: list[pl.Callback] = [clock.before, fedavg, clock.after, val_acc]
    if keep < 1.0:
        callbacks.append(FederatedDropout(keep=keep))
    trainer = pl.Trainer(**federated_trainer_defaults(
        max_epochs=rounds, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
    ))
    trainer.fit(module, datamodule=dm)
    h = fedavg.history
    tail = val_acc.values[-LAST_ROUNDS:]
    return Result(
        acc=sum(tail) / len(tail),
        down_bytes=sum(r["fl/downlink_bytes"] for r in h) / len(h),
        up_bytes=sum(r["fl/uplink_bytes"] for r in h) / len(h),
        down_ratio=sum(r["fl/downlink_ratio"] for r in h) / len(h),
        up_ratio=sum(r["fl/uplink_ratio"] for r in h) / len(h),
        client_seconds=sum(clock.per_round[1:]) / max(len(clock.per_round) - 1, 1),  # round 0 warms up
        flops_per_sample=training_flops_per_sample(model, keep),
        step_ms=step_milliseconds(model, keep),
    )


def averaged(model: str, rounds: int, seeds: list[int], keep: float, downlink: Callable[[], Codec | None],
             uplink: Callable[[], Codec | None]) -> Result:
    results = [run(model, rounds, s, keep, downlink(), uplink()) for s in seeds]
    fields = Result.__dataclass_fields__
    return Result(**{f: sum(getattr(r, f) for r in results) / len(results) for f in fields})


def none() -> Codec | None:
    return None


PIPELINES: dict[str, tuple[float, Callable[[], Codec | None], Callable[[], Codec | None]]] = {
    "FedAvg, float32": (1.0, none, none),
    "FD 0.75 + Kashin 4-bit down + 2-bit up (paper)": (
        0.75, lambda: Chain(Kashin(), StochasticQuantizer(bits=4)), lambda: Chain(StochasticQuantizer(bits=2))),
    "FD 0.75 + 4-bit down + 2-bit up": (
        0.75, lambda: Chain(StochasticQuantizer(bits=4)), lambda: Chain(StochasticQuantizer(bits=2))),
    "FD 0.75 + 3-bit down + subsample 0.5/2-bit up": (
        0.75, lambda: Chain(StochasticQuantizer(bits=3)),
        lambda: Chain(Subsample(fraction=0.5), StochasticQuantizer(bits=2))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--quick", action="store_true", help="1 seed, 30 rounds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--min-numel", type=int, default=1024, help="smaller tensors travel as float32")
    parser.add_argument("--raw", nargs="*", default=[], help="name patterns that always travel as float32")
    parser.add_argument("--only-pipeline", action="store_true")
    parser.add_argument("--keeps", type=float, nargs="+", default=list(KEEPS))
    parser.add_argument("--no-pipeline", action="store_true")
    args = parser.parse_args()
    SETTINGS.update(local_epochs=args.local_epochs, min_numel=args.min_numel, raw=args.raw)
    if args.quick:
        args.rounds, args.seeds = 30, 1
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    seeds = list(range(args.seeds))
    started = time.perf_counter()
    print(f"{args.rounds} rounds, seeds {seeds}, {args.threads} thread(s); accuracy = mean val/acc of the last "
          f"{LAST_ROUNDS} rounds, averaged over seeds; bytes per round over 10 clients\n")
    for model in [] if args.only_pipeline else args.models:
        print(f"### {model}: {sum(p.numel() for p in MODELS[model]().parameters()):,} parameters\n")
        print("| keep | val acc | vs keep 1 | down bytes/round | up bytes/round | client s/round (Trainer) | "
              "step ms (batch 16) | train MFLOPs/sample | FLOPs vs keep 1 |")
        print("|---|---|---|---|---|---|---|---|---|")
        base: Result | None = None
        for keep in args.keeps:
            r = averaged(model, args.rounds, seeds, keep, none, none)
            base = base or r
            print(f"| {keep} | {r.acc:.4f} | {100 * (r.acc - base.acc):+.1f} | {r.down_bytes:,.0f} | "
                  f"{r.up_bytes:,.0f} | {r.client_seconds:.3f} | {r.step_ms:.2f} | {r.flops_per_sample / 1e6:.3f} | "
                  f"{base.flops_per_sample / r.flops_per_sample:.2f}x less |", flush=True)
        print()
    if not args.only_pipeline:
        step_table(args.keeps)
    if args.no_pipeline:
        return
    pipeline(args.models[0], args.rounds, seeds)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


def step_table(keeps: list[float]) -> None:
    print("### One local step (forward, backward, SGD update; batch 16) on larger models, median ms\n")
    print("| model | " + " | ".join(f"keep {k}" for k in keeps) + " | keep 0.75 vs 1 |")
    print("|---|" + "---|" * (len(keeps) + 1))
    for name in STEP_MODELS:
        ms = {k: step_milliseconds(name, k, repeats=40) for k in keeps}
        speedup = f"{ms[1.0] / ms[0.75]:.2f}x less" if 1.0 in ms and 0.75 in ms else "-"
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in ms.values()) + f" | {speedup} |", flush=True)
    print()


def pipeline(model: str, rounds: int, seeds: list[int]) -> None:
    print(f"### Caldas pipeline, {model}\n")
    print("| run | val acc | vs FedAvg | down bytes/round | up bytes/round | down ratio | up ratio | "
          "client FLOPs | step time |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = None
    for name, (keep, down, up) in PIPELINES.items():
        r = averaged(model, rounds, seeds, keep, down, up)
        base = base or r
        print(f"| {name} | {r.acc:.4f} | {100 * (r.acc - base.acc):+.1f} | {r.down_bytes:,.0f} | {r.up_bytes:,.0f} | "
              f"{base.down_bytes / r.down_bytes:.1f}x less | {base.up_bytes / r.up_bytes:.1f}x less | "
              f"{base.flops_per_sample / r.flops_per_sample:.2f}x less | {base.step_ms / r.step_ms:.2f}x less |",
              flush=True)


if __name__ == "__main__":
    main()
