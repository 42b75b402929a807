"""Malformed LEAF JSON and IDX files give a DataFileError naming the file, the record and what is wrong."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lightning_fl.datamodules.datasets import LeafDataset, TorchvisionDataset
from lightning_fl.exceptions import DataFileError, FederatedConfigError

try:  # tests/ as a package, or tests/datamodules on sys.path (pytest's default rootdir-prepend import mode)
    from .vision_files import write_emnist, write_idx, write_mnist
except ImportError:
    from vision_files import write_emnist, write_idx, write_mnist  # type: ignore[no-redef]

# ---------------------------------------------------------------------------------------------------------- LEAF


def _leaf(root: Path, train: Any, test: Any = None) -> Path:
    """``<root>/train/part0.json`` holding ``train`` (written as is when it is a string) and a valid test split."""
    test = test if test is not None else {"users": ["u"], "user_data": {"u": {"x": [[0.0, 0.0]], "y": [0]}}}
    for split, content in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else json.dumps(content)
        (root / split / "part0.json").write_text(text)
    return root / "train" / "part0.json"


def _users(**users: dict[str, list[Any]]) -> dict[str, Any]:
    return {"users": list(users), "user_data": users}


def _pixels(value: float) -> list[float]:
    return [value] * 784


@pytest.mark.parametrize(
    ("name", "train", "problem"),
    [
        ("generic", '{"users": ["u"], "user_data": {"u": {"x": [[1, 2]], "y": [0]', r"is not valid JSON: .* line 1"),
        ("generic", "[1, 2]", r"must hold an object with a 'user_data' object, got list"),
        ("generic", {"users": ["u"]}, r"must hold an object with a 'user_data' object, got keys \['users'\]"),
        ("generic", _users(u=[[1.0]]), r"user 'u' must hold \{'x': \[...\], 'y': \[...\]\} \(two lists\)"),
        ("generic", _users(u={"x": [[0, 1], [1, 0]], "y": [0, 0.7]}), r"user 'u', sample 1: label must be an integer "
         r">= 0, got 0.7"),
        ("generic", _users(u={"x": [[0, 1]], "y": [-1]}), r"user 'u', sample 0: label must be an integer >= 0, got -1"),
        ("generic", _users(u={"x": [[0, 1]], "y": ["1"]}), r"sample 0: label must be an integer >= 0, got '1'"),
        ("generic", _users(u={"x": [[0, 1]], "y": [True]}), r"sample 0: label must be an integer >= 0, got True"),
        ("femnist", _users(u={"x": [_pixels(0.1)], "y": [62]}), r"label must be an integer in \[0, 61\], got 62"),
        ("femnist", _users(u={"x": [_pixels(0.1)] * 2, "y": [1.9, 3]}), r"label must be an integer in \[0, 61\], "
         r"got 1.9"),
        ("generic", _users(u={"x": [[0, 1], [1, 2, 3]], "y": [0, 1]}), r"sample 1: x has shape \(3,\), but sample 0 "
         r"has shape \(2,\)"),
        ("generic", _users(u={"x": [["a", "b"]], "y": [0]}), r"sample 0: x must be a \(nested\) list of numbers"),
        ("generic", _users(u={"x": [3.0], "y": [0]}), r"sample 0: x must be a list of numbers, got 3.0"),
        ("generic", _users(u={"x": [[0, float("nan")]], "y": [0]}), r"sample 0: x must hold finite numbers"),
        ("femnist", _users(u={"x": [[0.5] * 783], "y": [0]}), r"user 'u': FEMNIST x must be lists of 784 pixels"),
        ("shakespeare", _users(u={"x": ["a" * 80], "y": ["ab"]}), r"sample 0: y must be one character, got 'ab'"),
        ("shakespeare", _users(u={"x": ["a" * 80, "b" * 79], "y": ["a", "b"]}), r"sample 1: x must be a string of 80 "
         r"characters, as sample 0"),
        ("shakespeare", _users(u={"x": [7], "y": ["a"]}), r"sample 0: x must be a string, got 7"),
    ],
)
def test_malformed_leaf_records_name_file_user_and_sample(tmp_path: Path, name: str, train: Any, problem: str) -> None:
    path = _leaf(tmp_path, train)
    with pytest.raises(DataFileError, match=rf"{path!s}.*{problem}"):
        LeafDataset(str(tmp_path), name=name).load()


def test_leaf_users_with_inputs_of_different_shapes_are_refused(tmp_path: Path) -> None:
    path = _leaf(tmp_path, _users(u={"x": [[0, 1]], "y": [0]}, v={"x": [[0, 1, 2]], "y": [1]}))
    with pytest.raises(DataFileError, match=rf"{path}: user 'v' has inputs of shape \(3,\), but user 'u' in .* has "
                       r"\(2,\); every sample must have one shape"):
        LeafDataset(str(tmp_path), name="generic").load()


def test_leaf_integral_float_labels_are_the_integers_and_empty_users_are_skipped(tmp_path: Path) -> None:
    _leaf(tmp_path, _users(u={"x": [[0, 1], [1, 0]], "y": [1.0, 0]}, v={"x": [], "y": []}))
    splits = LeafDataset(str(tmp_path), name="generic").load()
    assert splits.train.targets.tolist() == [1, 0] and splits.train.targets.dtype == torch.int64


def test_data_file_errors_are_config_errors_and_value_errors(tmp_path: Path) -> None:
    _leaf(tmp_path, "{")
    with pytest.raises(FederatedConfigError):
        LeafDataset(str(tmp_path), name="generic").load()
    with pytest.raises(ValueError, match="is not valid JSON"):
        LeafDataset(str(tmp_path), name="generic").load()


# ----------------------------------------------------------------------------------------------------------- IDX


def _mnist(root: Path) -> Path:
    write_mnist(root, n_train=6, n_test=4)
    return root / "MNIST" / "raw"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def _bad_magic(path: Path) -> None:
    path.write_bytes(struct.pack(">I", 0x0803) + path.read_bytes()[4:])  # a labels file claiming 3 dimensions


def _label_out_of_range(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8 + 2] = 10  # record 2 of MNIST's labels: only 0..9 exist
    path.write_bytes(bytes(data))


def _fewer_labels(path: Path) -> None:
    write_idx(path, np.zeros(5, dtype=np.uint8))


def _small_images(path: Path) -> None:
    write_idx(path, np.zeros((6, 27, 28), dtype=np.uint8))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    ("file", "damage", "problem"),
    [
        ("train-images-idx3-ubyte", _truncate, r"the header says 6 records of 784 byte\(s\) \(4720 bytes with the "
         r"16-byte header\), but the file has 4719 bytes: truncated"),
        ("train-labels-idx1-ubyte", _bad_magic, r"is not an IDX file of unsigned bytes with 1 dimension\(s\): it "
         r"starts with 00000803, expected magic number 00000801"),
        ("train-labels-idx1-ubyte", _label_out_of_range, r"record 2 has label 10, outside \[0, 9\] \(10 classes\)"),
        ("train-labels-idx1-ubyte", _fewer_labels, r"holds 6 images but .*train-labels-idx1-ubyte holds 5 labels"),
        ("train-images-idx3-ubyte", _small_images, r"records must be \(28, 28\) bytes, the header says \(27, 28\)"),
        ("train-images-idx3-ubyte", _empty, r"is not an IDX file of unsigned bytes with 3 dimension\(s\): it starts "
         r"with nothing"),
        ("t10k-labels-idx1-ubyte", _truncate, r"t10k-labels-idx1-ubyte: the header says 4 records"),
    ],
)
def test_malformed_idx_files_name_the_file_and_record(tmp_path: Path, file: str, damage: Any, problem: str) -> None:
    damage(_mnist(tmp_path) / file)
    with pytest.raises(DataFileError, match=problem) as caught:
        TorchvisionDataset("mnist", root=str(tmp_path)).load()
    assert str(tmp_path / "MNIST" / "raw") in str(caught.value)


def test_emnist_labels_are_checked_against_the_split_classes(tmp_path: Path) -> None:
    write_emnist(tmp_path, split="balanced")  # labels drawn from 47 classes
    raw = tmp_path / "EMNIST" / "raw"
    for part in ("train", "test"):  # the same files read as the 10-class "digits" split
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            (raw / f"emnist-balanced-{part}-{kind}").rename(raw / f"emnist-digits-{part}-{kind}")
    with pytest.raises(DataFileError, match=r"emnist-digits-train-labels-idx1-ubyte: record \d+ has label \d+, outside "
                       r"\[0, 9\] \(10 classes\)"):
        TorchvisionDataset("emnist", root=str(tmp_path), emnist_split="digits").load()
