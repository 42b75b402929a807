"""Every YAML config parses and builds its objects (the CLI's own parser; no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_fl.cli import FederatedCLI

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_instantiates(config, tmp_path):
    cli = FederatedCLI(args=["--config", str(config), f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert cli.trainer.max_epochs >= 1
    assert cli.datamodule is not None and cli.model is not None
