"""Smoke test of ``benchmarks/cohort_speed.py``: its columns run, print their rows and do the same work."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "cohort_speed.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cohort_speed", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cohort_speed"] = module
    spec.loader.exec_module(module)
    return module


def _check_columns(row: dict, final_tol: float | None) -> None:
    """Every column ran (vectorized: or is n/a without the mode) and trained the plain loop's global model."""
    bench = sys.modules["cohort_speed"]
    cols = row["columns"]
    assert set(cols) == {"plain", "sequential", "vectorized", "vmap"}
    ran = ["sequential", "vmap"] + (["vectorized"] if bench.vectorize_supported() else [])
    if not bench.vectorize_supported():
        assert cols["vectorized"]["status"] == "n/a"
    for name in ["plain", *ran]:
        assert cols[name]["status"] == "ok", cols[name]["note"]
        assert cols[name]["ms_per_round"] > 0 and len(cols[name]["round_ms"]) == 2
    for name in ran:
        assert cols[name]["max_abs_diff_round0"] < 1e-4, (row["model"], name)
        if final_tol is not None:
            assert cols[name]["max_abs_diff"] < final_tol, (row["model"], name)


def test_quick_mlp_prints_rows_of_equal_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    threads = torch.get_num_threads()
    rows = bench.main(["--quick", "--models", "mlp", "--threads", "1", "--json", str(tmp_path / "rows.json")])
    assert torch.get_num_threads() == threads  # the benchmark restores what it changed
    out = capsys.readouterr().out
    assert "| mlp | 9,610 | 10 | 32 | " in out
    saved = json.loads((tmp_path / "rows.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and len(rows) == 1
    assert rows[0]["clients_per_round"] == 10 and rows[0]["local_steps"] == 10 and rows[0]["batch_size"] == 20
    _check_columns(rows[0], final_tol=1e-4)


def test_caldas_cnn_has_the_papers_size() -> None:
    model = _bench().CaldasCNN()
    assert sum(p.numel() for p in model.parameters()) == 1_663_370  # McMahan et al. (2017), Table 1's CNN
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_quick_gpu_rows_do_the_same_work(tmp_path: Path) -> None:
    rows = _bench().main(["--quick", "--accelerator", "gpu", "--json", str(tmp_path / "rows.json")])
    assert [r["model"] for r in rows] == ["mlp", "cnn"]
    for row in rows:  # float32 without TF32: the CNN's differences grow ~10x a round, so only round 0 is held tight
        _check_columns(row, final_tol=1e-4 if row["model"] == "mlp" else None)
