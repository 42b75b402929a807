"""The lightning-fl command reports every configuration error as one line, ``lightning-fl: error: ...``, exit 2."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from lightning_fl.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "fedavg_digits.yaml")
QUICK = ["--trainer.logger=false", "--trainer.max_epochs=1", "--data.clients_per_round=2",
         "--data.partitioner.init_args.num_clients=10"]


def cli_error(capsys, *args: str) -> str:
    """Run the command in-process; return the last line of stderr after checking the exit status is 2."""
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", CONFIG, *args])
    assert info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_error_wrapped_by_jsonargparse_union_is_the_package_message(capsys, tmp_path):
    last = cli_error(capsys, f"--trainer.default_root_dir={tmp_path}", "--data.partitioner.init_args.alpha=-1")
    assert last == "lightning-fl: error: alpha must be a finite number > 0, got -1.0"


def test_bad_codec_nested_in_the_server_callback(capsys, tmp_path):
    config = yaml.safe_load(Path(CONFIG).read_text())
    config["trainer"]["callbacks"][0]["init_args"]["uplink"] = {
        "class_path": "lightning_fl.codecs.StochasticQuantizer", "init_args": {"bits": 0}}
    path = tmp_path / "bad_codec.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(path), f"--trainer.default_root_dir={tmp_path}"])
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "lightning-fl: error: bits must be an integer in [1, 16], got 0"


def test_value_the_parser_refuses_is_one_line(capsys, tmp_path):
    last = cli_error(capsys, f"--trainer.default_root_dir={tmp_path}", "--data.batch_size=abc")
    assert last.startswith('lightning-fl: error: Parser key "data.batch_size": Expected a') and "abc" in last


def test_corrupt_ckpt_path(capsys, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"definitely not a checkpoint" * 10)
    last = cli_error(capsys, f"--trainer.default_root_dir={tmp_path}", f"--ckpt_path={bad}")
    assert last.startswith(f"lightning-fl: error: checkpoint '{bad}' is corrupt or truncated")


def test_resume_errors_are_one_line_and_good_resumes_load_weights_only(capsys, tmp_path, monkeypatch):
    main(["fit", "--config", CONFIG, f"--trainer.default_root_dir={tmp_path}", *QUICK])
    last_ckpt = next(tmp_path.rglob("last.ckpt"))
    capsys.readouterr()
    changed = cli_error(capsys, f"--trainer.default_root_dir={tmp_path / 'b'}", *QUICK, "--trainer.max_epochs=2",
                        "--data.partitioner.init_args.num_clients=12", f"--ckpt_path={last_ckpt}")
    assert changed.startswith("lightning-fl: error: cannot resume from checkpoint")
    assert "num_clients: checkpoint 10, now 12" in changed

    calls: list[object] = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    main(["fit", "--config", CONFIG, f"--trainer.default_root_dir={tmp_path / 'c'}", *QUICK, "--trainer.max_epochs=2",
          f"--ckpt_path={last_ckpt}"])
    assert calls and all(c is True for c in calls)


def test_console_command_prints_one_line_and_no_lightning_cli_warning(capsys, tmp_path, monkeypatch):
    # as the console script runs it: main() with no arguments reads sys.argv
    monkeypatch.setattr(sys, "argv", ["lightning-fl", "fit", "--config", CONFIG, "--data.clients_per_round=0",
                                      f"--trainer.default_root_dir={tmp_path}"])
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as info:
        warnings.simplefilter("always")
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "lightning-fl: error: clients_per_round must be an integer >= 1, got 0"
    assert "Traceback" not in err
    assert not [w for w in caught if "LightningCLI's args parameter" in str(w.message)]
