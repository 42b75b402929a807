"""FedGKT versus FedAvg training the full ResNet-56-style network, on the same clients and rounds.

Both runs use the same data module (same partition, same sampled clients per round, same batches), one process,
the CPU. Reported per method: final validation accuracy (FedGKT: the combined model, each round client's stem +
the server body, averaged over the round's clients; and the clients' own ResNet-8s), parameters and forward MACs
per sample of the model a client trains, measured client training seconds per round (all clients of the round,
one after another; FedGKT includes the feature extraction pass), and bytes per round each way.

    .venv/bin/python benchmarks/fedgkt.py [--rounds 20] [--clients 10] [--per-round 5] [--threads 1]
    .venv/bin/python benchmarks/fedgkt.py --dataset cifar10 --root ./data   # if CIFAR-10 is on disk
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_fl import ClassifierModule, FederatedAveraging, FederatedDataModule, federated_trainer_defaults
from lightning_fl.datamodules import Digits, DirichletPartitioner, IIDPartitioner, TorchvisionDataset
from lightning_fl.gkt import FedGKTModule, ModelCost, ResNet8Client, ResNetServerBody, full_model, resnet_stem

warnings.filterwarnings("ignore")


class ClientTimer(pl.Callback):
    """Seconds per round spent inside training batches (forward, backward, step, the client's model download)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rounds: list[float] = getattr(self, "rounds", [])
        self.rounds.append(0.0)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, out: Any, batch: Any,
                           idx: int) -> None:
        self.rounds[-1] += time.perf_counter() - self._start


def make_dm(args: argparse.Namespace) -> FederatedDataModule:
    if args.dataset == "digits":
        source: Any = Digits(val_fraction=0.2, seed=args.seed)
    else:
        source = TorchvisionDataset(args.dataset, root=args.root)
    partitioner: Any = (
        IIDPartitioner(args.clients, seed=args.seed) if args.alpha <= 0
        else DirichletPartitioner(args.clients, alpha=args.alpha, seed=args.seed)
    )
    return FederatedDataModule(source, partitioner=partitioner, clients_per_round=args.per_round,
                               batch_size=args.batch_size, local_epochs=args.local_epochs, seed=args.seed)


def trainer(args: argparse.Namespace, callbacks: list[pl.Callback]) -> pl.Trainer:
    return pl.Trainer(**federated_trainer_defaults(
        max_epochs=args.rounds, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
    ))


def run_fedgkt(args: argparse.Namespace, channels: int, classes: int) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    module = FedGKTModule(
        client=ResNet8Client(channels, classes), server_body=ResNetServerBody(args.depth, classes),
        num_classes=classes, alpha=args.alpha_kd, beta=args.beta_kd, server_epochs=args.server_epochs,
        server_batch_size=args.server_batch_size, optimizer="adam", client_lr=args.gkt_client_lr,
        server_lr=args.gkt_server_lr, feature_dtype=args.feature_dtype, seed=args.seed,
    )
    start = time.perf_counter()
    t = trainer(args, [])
    t.fit(module, datamodule=make_dm(args))
    hist = module.history
    return {
        "acc": float(t.callback_metrics["val/acc"]), "client_acc": float(t.callback_metrics["gkt/client_acc"]),
        "client_s": np.mean([h["gkt/client_seconds"] for h in hist]),
        "server_s": np.mean([h["gkt/server_seconds"] for h in hist]),
        "up": np.mean([h["fl/uplink_bytes"] for h in hist]), "down": np.mean([h["fl/downlink_bytes"] for h in hist]),
        "samples": np.mean([h["gkt/samples"] for h in hist]), "wall": time.perf_counter() - start,
        "curve": [float(h.get("gkt/server_loss", 0.0)) for h in hist],
    }


def run_fedavg(args: argparse.Namespace, channels: int, classes: int) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    net = full_model(resnet_stem(channels), ResNetServerBody(args.depth, classes))
    model = ClassifierModule(backbone=net, num_classes=classes, optimizer=args.fedavg_optimizer, lr=args.fedavg_lr,
                             log_train_loss=False)
    fedavg, timer = FederatedAveraging(), ClientTimer()
    start = time.perf_counter()
    t = trainer(args, [timer, fedavg])
    t.fit(model, datamodule=make_dm(args))
    hist = fedavg.history
    return {
        "acc": float(t.callback_metrics["val/acc"]), "client_acc": float("nan"), "client_s": np.mean(timer.rounds),
        "server_s": float("nan"), "up": np.mean([h["fl/uplink_bytes"] for h in hist]),
        "down": np.mean([h["fl/downlink_bytes"] for h in hist]), "wall": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", choices=["digits", "cifar10"])
    parser.add_argument("--root", default="./data")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.0, help="Dirichlet label skew; <= 0 for an IID split")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--server-epochs", type=int, default=2)
    parser.add_argument("--server-batch-size", type=int, default=32)
    parser.add_argument("--alpha-kd", type=float, default=1.0)
    parser.add_argument("--beta-kd", type=float, default=1.0)
    parser.add_argument("--gkt-client-lr", type=float, default=0.01)
    parser.add_argument("--gkt-server-lr", type=float, default=0.001)
    parser.add_argument("--feature-dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--fedavg-optimizer", default="adam", choices=["adam", "sgd"])
    parser.add_argument("--fedavg-lr", type=float, default=0.001)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["fedgkt", "fedavg"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, verbose=False)

    dm = make_dm(args)
    dm.setup("fit")
    assert dm.train_dataset is not None
    shape = tuple(dm.train_dataset[0][0].shape)  # type: ignore[index]
    channels, classes = shape[0], int(dm.train_dataset.tensors[1].max()) + 1  # type: ignore[attr-defined]
    client = ModelCost.of(ResNet8Client(channels, classes), shape)
    full = ModelCost.of(full_model(resnet_stem(channels), ResNetServerBody(args.depth, classes)), shape)
    results = {}
    if args.only in (None, "fedgkt"):
        results["FedGKT (ResNet-8 client)"] = (run_fedgkt(args, channels, classes), client)
    if args.only in (None, "fedavg"):
        results[f"FedAvg (ResNet-{args.depth})"] = (run_fedavg(args, channels, classes), full)

    split = "IID" if args.alpha <= 0 else f"Dirichlet {args.alpha}"
    print(f"\n{args.dataset} {shape}, {args.clients} clients ({split}),"
          f" {args.per_round} per round, {args.rounds} rounds, batch {args.batch_size}, {args.local_epochs} local "
          f"epoch(s), {torch.get_num_threads()} thread(s)\n")
    print("| method | val acc | client-model val acc | client params | client fwd MACs/sample | "
          "client train s/round | server s/round | uplink B/round | downlink B/round | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (r, cost) in results.items():
        client_acc = "-" if np.isnan(r["client_acc"]) else f"{r['client_acc']:.3f}"
        server_s = "-" if np.isnan(r["server_s"]) else f"{r['server_s']:.2f}"
        print(f"| {name} | {r['acc']:.3f} | {client_acc} | {cost.parameters:,} | {cost.macs:,} | {r['client_s']:.2f} | "
              f"{server_s} | {r['up']:,.0f} | {r['down']:,.0f} | {r['wall']:.0f} |")
    print(f"\nedge parameters {full.parameters / client.parameters:.1f}x fewer, forward MACs per sample "
          f"{full.macs / client.macs:.1f}x fewer (ResNet-8 vs ResNet-{args.depth} on {shape})")
    if len(results) == 2:
        (gkt, _), (avg, _) = results.values()
        print(f"measured client training time per round: {avg['client_s'] / gkt['client_s']:.1f}x less with FedGKT; "
              f"uplink {gkt['up'] / avg['up']:.2f}x and downlink {gkt['down'] / avg['down']:.3f}x FedAvg's bytes")


if __name__ == "__main__":
    main()
