"""Every shipped config, run by the ``lightning-fl`` CLI for a few rounds, as a user runs it.

After ``N`` rounds ``last.ckpt`` must hold round ``N - 1`` (the last completed round) even when ``val/acc`` stops
improving, and the best-by-``val/acc`` checkpoint must be kept. ``val/acc`` is made to fall every round for the
checkpoint callbacks only (the worst case for a checkpoint that follows a monitor: with
``ModelCheckpoint(monitor="val/acc", save_last=True)`` alone, Lightning rewrites ``last.ckpt`` only when the
monitor improves). The compression ratios that the configs' headers claim are checked on the same runs, every
round, from the TensorBoard scalars (they do not depend on the number of rounds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchvision import datasets

from lightning_fl.cli import main

try:  # tests/ on sys.path (pytest's default rootdir-prepend import mode), or tests/ as a package
    from datamodules.vision_files import cifar_checksum_tables, write_cifar10
except ImportError:
    from .datamodules.vision_files import cifar_checksum_tables, write_cifar10

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
ROUNDS = 2
#: The per-round ratios the configs' headers claim (float32 bytes / bytes sent, every tensor, headers included).
CLAIMS = {
    "fedmrn_digits": {"fl/uplink_ratio": 28.0},
    "caldas_digits": {"fl/downlink_ratio": 8.5, "fl/uplink_ratio": 17.9},
}


def _falling_val_acc(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``ModelCheckpoint._monitor_candidates`` with ``val/acc`` replaced by ``1 - 0.1 * round``: round 0 is best."""

    def candidates(self: ModelCheckpoint, trainer: Any) -> dict[str, Any]:
        metrics = original(self, trainer)
        if "val/acc" in metrics:
            metrics["val/acc"] = torch.tensor(1.0 - 0.1 * trainer.current_epoch)
        return metrics

    return candidates


def _cifar10(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Tiny CIFAR-10 files in the real format (torchvision's md5 check pointed at them); nothing is downloaded."""
    write_cifar10(root, per_batch=32, n_test=16)
    for attribute, value in cifar_checksum_tables(datasets.CIFAR10, root).items():
        monkeypatch.setattr(datasets.CIFAR10, attribute, value)
    return [f"--data.train_dataset.init_args.root={root}", "--data.pin_memory=false"]


@pytest.fixture(scope="module")
def run_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Path], Path]]:
    """Run a config for ``ROUNDS`` rounds (once per module) and return its TensorBoard log directory."""
    done: dict[Path, Path] = {}

    def run(config: Path) -> Path:
        if config not in done:
            root = tmp_path_factory.mktemp(config.stem)
            with pytest.MonkeyPatch.context() as monkeypatch:
                monkeypatch.setattr(
                    ModelCheckpoint, "_monitor_candidates", _falling_val_acc(ModelCheckpoint._monitor_candidates)
                )
                extra = _cifar10(root / "data", monkeypatch) if config.stem == "fedgkt_cifar10" else []
                main(["fit", "--config", str(config), f"--trainer.max_epochs={ROUNDS}", "--trainer.accelerator=cpu",
                      f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}", *extra])
            (events,) = root.rglob("events.out.tfevents.*")
            done[config] = events.parent
        return done[config]

    yield run


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_last_checkpoint_is_the_last_round_and_the_best_is_kept(config: Path, run_config) -> None:
    checkpoints = run_config(config) / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=False, map_location="cpu")
    assert last["epoch"] == ROUNDS - 1, sorted(p.name for p in checkpoints.iterdir())
    if "FederatedAveraging" in last["callbacks"]:
        assert last["callbacks"]["FederatedAveraging"]["rounds_completed"] == ROUNDS
    assert (checkpoints / f"round-epoch={ROUNDS - 1}.ckpt").exists()
    monitored = [state for key, state in last["callbacks"].items()
                 if key.startswith("ModelCheckpoint") and state["monitor"] == "val/acc"]
    if monitored:  # the best round (round 0, since val/acc falls) is kept too
        assert Path(monitored[0]["best_model_path"]).name == "best-epoch=0.ckpt"
        assert (checkpoints / "best-epoch=0.ckpt").exists()


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_config_logs_the_ratios_its_header_claims_every_round(name: str, run_config) -> None:
    (config,) = [c for c in CONFIGS if c.stem == name]
    events = EventAccumulator(str(run_config(config)))
    events.Reload()
    for tag, floor in CLAIMS[name].items():
        ratios = [e.value for e in events.Scalars(tag)]
        assert len(ratios) == ROUNDS, tag
        assert min(ratios) >= floor, f"{name}: {tag} {ratios}, claimed >= {floor}"
