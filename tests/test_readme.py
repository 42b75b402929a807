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


@pytest.mark.distributed
@pytest.mark.slow
def test_readme_module_reports_the_whole_validation_set_on_two_devices(tmp_path, monkeypatch):
    """The example's ``val/acc`` on two processes is the accuracy over the whole validation set, not rank 0's half."""
    import importlib

    import pytorch_lightning as pl
    import torch

    from lightning_fl import FederatedDataModule, FederatedDDPStrategy
    from lightning_fl.datamodules import IIDPartitioner, load_digits_dataset

    module_source = python_blocks()[0].split("\ntrain, val = ")[0]  # the imports and the module class
    (tmp_path / "readme_module.py").write_text(module_source)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned processes import the class from there too
    monkeypatch.chdir(tmp_path)
    my_classifier = importlib.import_module("readme_module").MyClassifier
    train, val = load_digits_dataset(val_fraction=0.2, seed=0)
    torch.manual_seed(0)
    model = my_classifier()
    x, y = val.tensors
    with torch.no_grad():
        correct = model.net(x).argmax(-1) == y
    whole, rank0_half = float(correct.float().mean()), float(correct[0::2].float().mean())
    assert abs(whole - rank0_half) > 1e-3  # otherwise this test could not tell the two apart
    dm = FederatedDataModule(train, val, partitioner=IIDPartitioner(num_clients=10, seed=0), clients_per_round=2)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=FederatedDDPStrategy(start_method="spawn"),
                         logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(model, datamodule=dm)
    assert float(trainer.callback_metrics["val/acc"]) == pytest.approx(whole, abs=1e-6)
