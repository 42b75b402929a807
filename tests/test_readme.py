"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert python_blocks()


@pytest.mark.slow
def test_readme_example_runs_and_learns(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    for block in python_blocks():  # in order, in one namespace, as a reader would paste them
        exec(compile(block, str(README), "exec"), namespace)
    acc = float(namespace["trainer"].callback_metrics["val/acc"])
    assert acc > 0.75, acc  # chance is 0.1
    assert list((tmp_path / "runs" / "readme").glob("version_0/events.out.tfevents.*"))
