"""Milliseconds per FedAvg round of K clients: a plain-torch loop, lightning-fl sequential, lightning-fl vectorized,
and a plain ``torch.func`` vmap reference, on identical work, with peak memory and a check that the work is the same.

Workload (issue 13): every round, K clients of 200 samples each run 10 local steps of batch 20 (one local epoch)
with SGD (lr 0.05) from the global model; the server takes their mean update weighted by sample count (equal here).
The clients hold scikit-learn's embedded digits (the 1,437 training images of ``load_digits_dataset``, repeated to
fill K x 200 samples and split IID; no download). Models:

- ``mlp``: the digits MLP of ``benchmarks/round_overhead.py``, ``MLP(64, [128], 10)`` on the 8x8 images (9,610
  parameters);
- ``cnn``: the CNN of Caldas et al. (2018) / McMahan et al. (2017): two 5x5 convolutions with 32 and 64 channels
  ("same" padding), each followed by ReLU and 2x2 max-pooling, then fc 3136 -> 512 and 512 -> 10 (1,663,370
  parameters), on the digits upsampled to 28x28 with bilinear ``F.interpolate``.

``--workload round-overhead`` runs instead the clients of ``benchmarks/round_overhead.py`` (100 Dirichlet(0.5)
clients of the 1,437 digits, 1 to 44 samples, K of them per round, batch 16, one local epoch: 1 to 3 steps), the
workload of the issue's CPU target; the vmap reference needs equal clients and is ``n/a`` there.

The training set lives on the device in every column; only sample indices travel (the plain loop copies a round's,
the vmap reference a chunk's at once; lightning-fl's loader indexes with each batch's). Every column runs a
warm-up round and then ``--rounds`` timed rounds; the table shows the median and the speed-up over the plain loop
(plain time / column time: above 1 is faster). Peak memory is the growth over the column's start (see
``cohort_columns.py``). Each column's global weights are compared with the plain loop's after round 0 and after the
last round (largest absolute difference). In float32 they differ by rounding alone: ~1e-8 for the MLP, ~1e-6 for the
CNN after round 0, which training then amplifies about tenfold a round for the CNN (its plain loop and vmap
reference agree exactly in float64); a large round-0 difference means the column did different work.
``--precision 32`` turns TF32 off on the GPU (``--allow-tf32`` keeps PyTorch's default) so float32 means float32.

    .venv/bin/python benchmarks/cohort_speed.py --quick --models mlp                # K=10, 2 rounds: seconds
    .venv/bin/python benchmarks/cohort_speed.py --accelerator cpu --threads 2 --clients-per-round 10 50
    python3 benchmarks/cohort_speed.py --accelerator gpu --precision bf16-mixed --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort_columns import (
    ColumnResult,
    lightning_fl_column,
    max_abs_diff,
    plain_loop,
    vectorize_supported,
    vmap_reference,
)

from lightning_fl import FederatedDataModule
from lightning_fl.datamodules import DirichletPartitioner, IIDPartitioner, InMemoryDataset, load_digits_dataset
from lightning_fl.nn import MLP

WORKLOADS = ("prototype", "round-overhead")
COLUMNS = ("sequential", "vectorized", "vmap")
TITLES = {"plain": "plain loop", "sequential": "lightning-fl sequential", "vectorized": "lightning-fl vectorized",
          "vmap": "torch.func vmap reference"}


class CaldasCNN(nn.Sequential):
    """The CNN of Caldas et al. (2018) and McMahan et al. (2017) for 28x28 single-channel images.

    Example:
        >>> sum(p.numel() for p in CaldasCNN().parameters()), CaldasCNN()(torch.zeros(2, 1, 28, 28)).shape
        (1663370, torch.Size([2, 10]))
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(), nn.Linear(512, num_classes),
        )


#: name -> (model factory, input height and width)
MODELS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "mlp": (lambda: MLP(64, [128], 10), 8),
    "cnn": (CaldasCNN, 28),
}


def client_data(image_size: int, num_samples: int | None, device: torch.device) -> InMemoryDataset:
    """The digits' training images at ``image_size`` x ``image_size``, repeated to ``num_samples`` (``None``: each
    once), on ``device``."""
    train, _ = load_digits_dataset(val_fraction=0.2, seed=0)
    x, y = train.tensors
    if image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    index = torch.arange(len(x) if num_samples is None else num_samples) % len(x)
    return InMemoryDataset(x[index].contiguous().to(device), y[index].to(device))


def data_module_factory(
    workload: str, image_size: int, clients: int, args: argparse.Namespace, device: torch.device
) -> Callable[[], FederatedDataModule]:
    """Fresh, set-up data modules of a workload with ``clients`` clients per round.

    ``prototype``: ``clients`` IID clients of ``local_steps * batch_size`` samples each, all of them in every round.
    ``round-overhead``: ``benchmarks/round_overhead.py``'s: 100 Dirichlet(0.5) clients of the 1,437 digits (unequal
    sizes, 1 to 3 steps each), ``clients`` sampled per round, batch 16.
    """
    prototype = workload == "prototype"
    samples = clients * args.local_steps * args.batch_size if prototype else None
    data = client_data(image_size, samples, device)

    def make() -> FederatedDataModule:
        partitioner = (IIDPartitioner(num_clients=clients, seed=0) if prototype
                       else DirichletPartitioner(num_clients=100, alpha=0.5, seed=0))
        dm = FederatedDataModule(data, partitioner=partitioner, clients_per_round=clients,
                                 batch_size=args.batch_size if prototype else 16, local_epochs=1, seed=0)
        dm.setup("fit")
        return dm

    return make


def _vectorized(backbone: nn.Module, make_dm: Callable[[], FederatedDataModule], common: dict[str, Any],
                max_parallel_clients: int | None) -> ColumnResult:
    """The vectorized column; an error is reported in the table (a new mode) rather than losing the other rows."""
    try:
        return lightning_fl_column(
            backbone, make_dm, **common, vectorize=True, max_parallel_clients=max_parallel_clients
        )
    except Exception as err:
        return ColumnResult(status="error", note=f"{type(err).__name__}: {err}")


def run_row(model_name: str, clients: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Every column on one (model, K) workload; the row as a JSON-ready dict."""
    make_model, image_size = MODELS[model_name]
    torch.manual_seed(0)
    backbone = make_model()
    make_dm = data_module_factory(args.workload, image_size, clients, args, device)
    common = {"rounds": args.rounds, "device": device, "precision": args.precision, "lr": args.lr}
    runners: dict[str, Callable[[], ColumnResult]] = {"plain": lambda: plain_loop(backbone, make_dm(), **common)}
    if "sequential" in args.columns:
        runners["sequential"] = lambda: lightning_fl_column(backbone, make_dm, **common)
    if "vectorized" in args.columns:
        runners["vectorized"] = lambda: _vectorized(backbone, make_dm, common, args.max_parallel_clients)
    if "vmap" in args.columns:
        runners["vmap"] = lambda: vmap_reference(
            backbone, make_dm(), **common, max_parallel_clients=args.max_parallel_clients
        )
    results: dict[str, ColumnResult] = {}
    for _ in range(args.repeats):  # interleaved, so a noisy neighbour slows every column alike; best of each
        for name, run in runners.items():
            r = run()
            best = results.get(name)
            if best is None or best.median_ms is None or (r.median_ms is not None and r.median_ms < best.median_ms):
                results[name] = r
    plain_ms = results["plain"].median_ms
    assert plain_ms is not None
    columns = {}
    for name, r in results.items():
        ms = r.median_ms
        columns[name] = {
            "status": r.status, "note": r.note, "ms_per_round": ms, "round_ms": r.round_ms, "peak_mib": r.peak_mib,
            "speedup": None if ms is None else plain_ms / ms,
            "max_abs_diff": None if name == "plain" else max_abs_diff(results["plain"].weights, r.weights),
            "max_abs_diff_round0": (
                None if name == "plain" else max_abs_diff(results["plain"].first_weights, r.first_weights)
            ),
        }
    return {
        "model": model_name, "workload": args.workload, "params": sum(p.numel() for p in backbone.parameters()),
        "clients_per_round": clients, "precision": args.precision, "columns": columns,
        # round-overhead: one local epoch of each client's own (unequal) data
        "local_steps": args.local_steps if args.workload == "prototype" else None,
        "batch_size": args.batch_size if args.workload == "prototype" else 16,
    }


def _ms_cell(column: dict[str, Any] | None, plain: bool = False) -> str:
    if column is None:
        return "-"
    if column["status"] != "ok":
        return column["status"]
    return f"{column['ms_per_round']:.1f}" + ("" if plain else f" ({column['speedup']:.2f}x)")


def _slash(values: list[float | None], fmt: str) -> str:
    return " / ".join("-" if v is None else format(v, fmt) for v in values)


def table_header() -> list[str]:
    ms = " | ".join(f"{TITLES[c]} ms (speed-up)" for c in COLUMNS)
    return [
        f"| model | params | K | precision | plain loop ms | {ms} | peak MiB plain / seq / vec / vmap "
        "| max abs diff vs plain: seq / vec / vmap | same, after round 0 |",
        "|---|---|---|---|---|" + "---|" * len(COLUMNS) + "---|---|---|",
    ]


def table_line(row: dict[str, Any]) -> str:
    cols = row["columns"]
    peaks = [cols[c]["peak_mib"] if c in cols else None for c in ("plain", *COLUMNS)]
    diffs = [cols[c]["max_abs_diff"] if c in cols else None for c in COLUMNS]
    first = [cols[c]["max_abs_diff_round0"] if c in cols else None for c in COLUMNS]
    model = row["model"] if row["workload"] == "prototype" else f"{row['model']} ({row['workload']})"
    cells = [model, f"{row['params']:,}", str(row["clients_per_round"]), row["precision"],
             _ms_cell(cols["plain"], plain=True), *(_ms_cell(cols.get(c)) for c in COLUMNS),
             _slash(peaks, ".0f"), _slash(diffs, ".1e"), _slash(first, ".1e")]
    return "| " + " | ".join(cells) + " |"


def machine(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "accelerator": args.accelerator, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "rounds": args.rounds,
        "precision": args.precision, "repeats": args.repeats,
        "workload": args.workload,
        "vectorize_available": vectorize_supported(),
        "max_parallel_clients": args.max_parallel_clients,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["tf32"] = args.allow_tf32
    return info


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--workload", choices=WORKLOADS, default="prototype",
                        help="prototype: K equal clients x 10 steps of 20; round-overhead: round_overhead.py's clients")
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument("--clients-per-round", nargs="+", type=int, default=[10, 50, 100, 200])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--precision", choices=("32", "bf16-mixed"), default="32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--columns", nargs="+", choices=COLUMNS, default=list(COLUMNS),
                        help="columns besides the plain loop, which always runs (it is the reference)")
    parser.add_argument("--max-parallel-clients", type=int, default=None,
                        help="clients per vectorized chunk (vectorized and vmap columns; default: all / the mode's)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the columns this many times, interleaved, and keep each one's fastest (noisy CPUs)")
    parser.add_argument("--local-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--allow-tf32", action="store_true", help="keep TF32 on for float32 on the GPU")
    parser.add_argument("--quick", action="store_true", help="K=10 only and 2 timed rounds")
    parser.add_argument("--json", type=Path, default=None, help="write the machine and the rows to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients_per_round, args.rounds = [10], 2
    for name in ("rounds", "repeats", "local_steps", "batch_size", "threads", "max_parallel_clients"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if any(k < 1 for k in args.clients_per_round):
        parser.error(f"--clients-per-round must be at least 1, got {args.clients_per_round}")
    if args.workload == "round-overhead" and max(args.clients_per_round) > 100:
        parser.error(f"--clients-per-round must be at most 100 (its clients) with --workload round-overhead, got "
                     f"{args.clients_per_round}")
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        parser.error("--accelerator gpu needs CUDA, and torch.cuda.is_available() is False here")
    return args


@contextlib.contextmanager
def process_settings(args: argparse.Namespace) -> Iterator[None]:
    """Quiet Lightning, set the thread count and (float32 on a GPU) turn TF32 off; all restored on exit, so the
    benchmark can run inside another program (its smoke test)."""
    threads, tf32 = torch.get_num_threads(), (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fl")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        if args.accelerator == "gpu" and not args.allow_tf32:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def warm_up(args: argparse.Namespace, device: torch.device) -> None:
    """Pay the process's one-time costs (autograd, torch.func, Trainer start-up, allocator pools) before the first
    row: one untimed round of 2 clients of the first model in the plain loop, lightning-fl and the vmap reference."""
    make_model, image_size = MODELS[args.models[0]]
    make_dm = data_module_factory("prototype", image_size, 2, args, device)
    common = {"rounds": 0, "device": device, "precision": args.precision, "lr": args.lr}
    plain_loop(make_model(), make_dm(), **common)
    if "sequential" in args.columns:
        lightning_fl_column(make_model(), make_dm, **common)
    if "vmap" in args.columns:
        vmap_reference(make_model(), make_dm(), **common)


def print_notes(rows: list[dict[str, Any]]) -> None:
    """Why a column is n/a or failed, once per reason, with the rows it concerns."""
    notes: dict[str, list[str]] = {}
    for r in rows:
        for c, v in r["columns"].items():
            if v["note"]:
                notes.setdefault(f"{c}: {v['note']}", []).append(f"{r['model']} K={r['clients_per_round']}")
    for note, where in notes.items():
        print(f"{note} ({', '.join(where)})")


def write_json(path: Path, content: dict[str, Any]) -> None:
    """Write ``content`` to ``path`` whole or not at all (a run killed while writing leaves the previous file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(content, indent=1))
    partial.replace(path)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark, print the table (and write ``--json`` after every row); return the rows."""
    args = parse_args(argv)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    rows: list[dict[str, Any]] = []
    with process_settings(args):
        info = machine(args, device)
        print(f"{info}; {args.local_steps} local steps of batch {args.batch_size} per client, median of "
              f"{args.rounds} rounds after 1 warm-up", flush=True)
        warm_up(args, device)
        for line in table_header():
            print(line, flush=True)
        for model_name in args.models:
            for clients in args.clients_per_round:
                rows.append(run_row(model_name, clients, args, device))
                print(table_line(rows[-1]), flush=True)
                if args.json is not None:  # after every row, so a run cut short keeps what it measured
                    write_json(args.json, {"machine": info, "rows": rows})
    print_notes(rows)
    return rows


if __name__ == "__main__":
    main()
