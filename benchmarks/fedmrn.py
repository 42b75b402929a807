"""FedAvg versus FedMRN (binary and signed masks, with and without progressive masking) on the same clients,
rounds and seeds: final accuracy, uplink bytes per round, and the uplink ratio over all tensors and over the
masked tensors alone (all measured from the payloads).

    .venv/bin/python benchmarks/fedmrn.py [--rounds 100] [--local-epochs 5] [--dataset digits|mnist --root DIR]
"""

from __future__ import annotations

import argparse
import time
import warnings

import pytorch_lightning as pl
import torch

from lightning_fl import ClassifierModule, FederatedAveraging, FederatedDataModule, federated_trainer_defaults
from lightning_fl.algorithms.fedmrn.callback import MaskedRandomNoise
from lightning_fl.codecs import Identity, MaskedNoiseCodec
from lightning_fl.codecs.noise_masks import sample_noise
from lightning_fl.datamodules import DirichletPartitioner, TorchvisionDataset
from lightning_fl.nn import MLP

warnings.filterwarnings("ignore")


class LastAccuracies(pl.Callback):
    def __init__(self) -> None:
        self.acc: list[float] = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.acc.append(float(trainer.callback_metrics["val/acc"]))


def run(args: argparse.Namespace, fedmrn: MaskedRandomNoise | None, lr: float) -> tuple[float, float, float]:
    pl.seed_everything(0, verbose=False)
    source = None if args.dataset == "digits" else TorchvisionDataset(name=args.dataset, root=args.root)
    in_features = 64 if args.dataset == "digits" else 784
    dm = FederatedDataModule(source, partitioner=DirichletPartitioner(num_clients=100, alpha=0.5, seed=0),
                             clients_per_round=10, batch_size=args.batch_size, local_epochs=args.local_epochs)
    model = ClassifierModule(backbone=MLP(in_features, [256, 256], 10), lr=lr, log_train_loss=False)
    fedavg, last = FederatedAveraging(), LastAccuracies()
    callbacks: list[pl.Callback] = [fedavg, last] + ([fedmrn] if fedmrn is not None else [])
    trainer = pl.Trainer(**federated_trainer_defaults(
        max_epochs=args.rounds, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks))
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - start
    acc = sum(last.acc[-5:]) / len(last.acc[-5:])
    return acc, fedavg.history[-1]["fl/uplink_bytes"], seconds


def masked_only_ratio(shape: tuple[int, ...], mask: str) -> float:
    """Raw float32 payload bytes over FedMRN payload bytes, for one masked tensor of ``shape``."""
    codec = MaskedNoiseCodec(mask, "uniform", 0.01)
    n = sample_noise(shape, 1, "uniform", 0.01, "cpu")
    return Identity().encode(torch.zeros(shape), 0).nbytes / codec.encode(n, seed=1).nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dataset", default="digits", help="digits, or a torchvision name with --root")
    parser.add_argument("--root", default="data")
    args = parser.parse_args()
    rows = [
        ("FedAvg (lr 0.05)", None, 0.05),
        ("FedMRN binary + PSM", MaskedRandomNoise("binary", progressive=True), 0.1),
        ("FedMRN binary, no PSM", MaskedRandomNoise("binary", progressive=False), 0.1),
        ("FedMRN signed + PSM", MaskedRandomNoise("signed", progressive=True), 0.1),
        ("FedMRN signed, no PSM", MaskedRandomNoise("signed", progressive=False), 0.1),
    ]
    print(f"{args.dataset}, MLP 784/64-256-256-10, 100 clients, Dirichlet 0.5, 10 per round, "
          f"{args.local_epochs} local epochs, batch {args.batch_size}, {args.rounds} rounds; accuracy = mean of the "
          "last 5 rounds' validation accuracy")
    print("| method | final acc | uplink bytes/round | uplink ratio, all tensors | ratio, masked tensors | s |")
    print("|---|---|---|---|---|---|")
    dense = None
    for name, fedmrn, lr in rows:
        acc, up, seconds = run(args, fedmrn, lr)
        dense = up if fedmrn is None else dense
        masked = "1.0x" if fedmrn is None else f"{masked_only_ratio((256, 256), fedmrn.mask):.1f}x"
        ratio = dense / up if dense else float("nan")
        print(f"| {name} | {acc:.4f} | {up:,.0f} | {ratio:.1f}x | {masked} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
