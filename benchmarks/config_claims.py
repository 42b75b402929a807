"""Run shipped configs from the shell, as a user would, and print what their TensorBoard scalars say.

Each run is ``python -m lightning_fl.cli fit --config CONFIG [OVERRIDE ...]`` in a fresh process, logging to a
temporary directory; the script then reads the event file with TensorBoard's ``EventAccumulator`` and prints
the last round's ``val/acc``, the mean ``val/acc`` of the last 5 rounds, and the mean per-round
``fl/uplink_ratio`` and ``fl/downlink_ratio`` (float32 bytes / bytes sent, every tensor, headers and seeds
included). Overrides after ``--`` go to every run, so a FedAvg baseline on another config's model is one line:

    .venv/bin/python benchmarks/config_claims.py configs/fedmrn_digits.yaml
    .venv/bin/python benchmarks/config_claims.py configs/fedavg_digits.yaml -- --data.local_epochs=5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]


def run_config(config: Path, overrides: list[str], workdir: Path) -> tuple[dict[str, list[float]], float]:
    """Fit ``config`` with ``overrides`` in a subprocess logging under ``workdir``; return its scalars and seconds.

    Args:
        config: A YAML config of the ``lightning-fl`` CLI.
        overrides: Extra command-line arguments (``--trainer.max_epochs=3``).
        workdir: Where the run's logs and checkpoints go.

    Returns:
        ``({tag: values in step order}, wall seconds)``.
    """
    args = [
        sys.executable, "-m", "lightning_fl.cli", "fit", "--config", str(config),
        f"--trainer.default_root_dir={workdir}", f"--trainer.logger.init_args.save_dir={workdir}",
        *overrides,
    ]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise RuntimeError(f"the run of {config} failed:\n{done.stderr[-4000:]}")
    seconds = time.perf_counter() - start
    events = sorted(workdir.rglob("events.out.tfevents.*"))
    if not events:
        raise RuntimeError(f"the run of {config} wrote no TensorBoard events under {workdir}")
    acc = EventAccumulator(str(events[-1].parent))
    acc.Reload()
    scalars = {tag: [e.value for e in sorted(acc.Scalars(tag), key=lambda e: e.step)] for tag in acc.Tags()["scalars"]}
    return scalars, seconds


def summary(scalars: dict[str, list[float]]) -> dict[str, float]:
    """Last and last-5 mean ``val/acc``, mean per-round ratios."""
    acc = scalars.get("val/acc", [])
    out = {"rounds": float(len(acc)), "acc_last": acc[-1] if acc else float("nan")}
    out["acc_last5"] = sum(acc[-5:]) / len(acc[-5:]) if acc else float("nan")
    for tag in ("fl/uplink_ratio", "fl/downlink_ratio", "fl/uplink_bytes", "fl/downlink_bytes"):
        values = scalars.get(tag, [])
        out[tag] = sum(values) / len(values) if values else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--label", default="", help="a label printed in the table's first column")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    overrides = argv[split + 1:]
    header = ["run", "rounds", "val/acc last", "val/acc last 5", "uplink ratio", "downlink ratio", "uplink B",
              "downlink B", "s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for config in args.configs:
        with tempfile.TemporaryDirectory() as tmp:
            scalars, seconds = run_config(config.resolve(), overrides, Path(tmp))
        s = summary(scalars)
        name = f"{args.label or config.stem} {' '.join(overrides)}".strip()
        print(
            f"| {name} | {s['rounds']:.0f} | {s['acc_last']:.4f} | {s['acc_last5']:.4f} | {s['fl/uplink_ratio']:.2f}x"
            f" | {s['fl/downlink_ratio']:.2f}x | {s['fl/uplink_bytes']:,.0f} | {s['fl/downlink_bytes']:,.0f}"
            f" | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
