"""The lightning-fl command end to end: the default config, overrides, resume, TensorBoard scalars, partition."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_fl.cli import main

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "fedavg_digits.yaml")
FL_TAGS = [
    "fl/clients", "fl/uplink_bytes", "fl/downlink_bytes", "fl/uplink_bytes_total", "fl/downlink_bytes_total",
    "fl/uplink_ratio", "fl/downlink_ratio", "fl/round_seconds",
]


def fit(tmp_path: Path, name: str, *extra: str) -> Path:
    main(["fit", "--config", CONFIG, f"--trainer.logger.init_args.save_dir={tmp_path}",
          f"--trainer.logger.init_args.name={name}", "--data.clients_per_round=20", *extra])
    return tmp_path / name / "version_0"


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_cli_runs_resumes_and_logs_one_value_per_round(tmp_path):
    full = fit(tmp_path, "full", "--trainer.max_epochs=3")
    logged = scalars(full)
    for tag in [*FL_TAGS, "val/acc", "val/loss"]:
        assert [step for step, _ in logged[tag]] == [0, 1, 2], tag
    assert [v for _, v in logged["fl/clients"]] == [20.0, 20.0, 20.0]
    assert [v for _, v in logged["fl/uplink_ratio"]] == [1.0, 1.0, 1.0]
    up = [v for _, v in logged["fl/uplink_bytes"]]
    assert [v for _, v in logged["fl/uplink_bytes_total"]] == [up[0], up[0] + up[1], sum(up)]

    part = fit(tmp_path, "part", "--trainer.max_epochs=2")
    last = part / "checkpoints" / "last.ckpt"
    assert last.exists()
    resumed = fit(tmp_path, "resumed", "--trainer.max_epochs=3", f"--ckpt_path={last}")
    a = torch.load(full / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_partition_subcommand_prints_and_plots(tmp_path, capsys):
    out = tmp_path / "parts.png"
    main(["partition", "--config", CONFIG, "--plot", str(out), "--data.partitioner.init_args.num_clients=20"])
    text = capsys.readouterr().out
    assert "20 clients" in text or "clients: 20" in text or "20" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_bad_values_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", CONFIG, "--data.clients_per_round=0", f"--trainer.default_root_dir={tmp_path}"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "lightning-fl: error: clients_per_round must be an integer >= 1, got 0"
    )


def test_cli_finds_a_model_class_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "my_module.py").write_text(
        "from lightning_fl import ClassifierModule\n\n\nclass MyModel(ClassifierModule):\n    pass\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_module", raising=False)
    run_dir = fit(tmp_path, "own", "--model.class_path=my_module.MyModel", "--trainer.max_epochs=1",
                  "--data.clients_per_round=2", "--trainer.limit_val_batches=1")
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    monkeypatch.delitem(sys.modules, "my_module", raising=False)
