"""TorchvisionDataset on tiny files written in the real on-disk formats (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

from lightning_fl.datamodules.datasets import TorchvisionDataset
from lightning_fl.datamodules.datasets.vision import channel_stats, expected_files
from lightning_fl.exceptions import FederatedConfigError

try:  # tests/ as a package, or tests/datamodules on sys.path (pytest's default rootdir-prepend import mode)
    from .vision_files import cifar_checksum_tables, write_cifar10, write_cifar100, write_emnist, write_mnist
except ImportError:
    from vision_files import cifar_checksum_tables, write_cifar10, write_cifar100, write_emnist, write_mnist


def _write(name: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write tiny files for ``name``; for CIFAR point torchvision's md5 tables at them (its check still runs)."""
    if name in ("mnist", "fashion_mnist"):
        written = write_mnist(root, folder="MNIST" if name == "mnist" else "FashionMNIST")
        return {split: (images[:, None], labels) for split, (images, labels) in written.items()}
    if name == "emnist":
        return {split: (images[:, None], labels) for split, (images, labels) in write_emnist(root).items()}
    writer, cls = (write_cifar10, datasets.CIFAR10) if name == "cifar10" else (write_cifar100, datasets.CIFAR100)
    written = writer(root)
    for attribute, value in cifar_checksum_tables(cls, root).items():
        monkeypatch.setattr(cls, attribute, value)
    return written


@pytest.fixture(autouse=True)
def _no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that would reach the network."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(datasets.utils, "download_url", refuse)
    monkeypatch.setattr(datasets.utils, "download_and_extract_archive", refuse)
    for cls in (datasets.MNIST, datasets.EMNIST, datasets.CIFAR10):
        monkeypatch.setattr(cls, "download", refuse)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "emnist", "cifar10", "cifar100"])
def test_each_name_loads_raw_pixels_and_labels(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = _write(name, tmp_path, monkeypatch)
    splits = TorchvisionDataset(name, root=str(tmp_path), normalize=False).load()
    assert splits.test is None
    for split, dataset in (("train", splits.train), ("test", splits.val)):
        images, labels = written[split]
        inputs, targets = dataset.tensors
        assert inputs.dtype == torch.float32 and targets.dtype == torch.int64
        assert inputs.shape == images.shape  # (N, C, H, W): (N, 1, 28, 28) or (N, 3, 32, 32)
        torch.testing.assert_close(inputs, torch.from_numpy(images).float() / 255)
        assert targets.tolist() == labels.tolist()
        assert dataset.groups is None


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_normalised_with_train_channel_stats(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = _write(name, tmp_path, monkeypatch)
    source = TorchvisionDataset(name, root=str(tmp_path))
    splits = source.load()
    train_x = splits.train.tensors[0].double()
    torch.testing.assert_close(train_x.mean(dim=(0, 2, 3)), torch.zeros(train_x.shape[1], dtype=torch.float64))
    torch.testing.assert_close(train_x.std(dim=(0, 2, 3), correction=0), torch.ones(train_x.shape[1]).double())
    # The test set uses the train statistics (plain reference computation).
    raw_train = torch.from_numpy(written["train"][0]).double() / 255
    mean, std = raw_train.mean(dim=(0, 2, 3)), raw_train.std(dim=(0, 2, 3), correction=0)
    assert source.mean == pytest.approx(mean.tolist()) and source.std == pytest.approx(std.tolist())
    expected_val = (torch.from_numpy(written["test"][0]).double() / 255 - mean.view(1, -1, 1, 1)) / std.view(
        1, -1, 1, 1
    )
    torch.testing.assert_close(splits.val.tensors[0], expected_val.float(), rtol=1e-5, atol=1e-5)


def test_val_split_none_returns_official_test_as_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write("mnist", tmp_path, monkeypatch)
    splits = TorchvisionDataset("mnist", root=str(tmp_path), val_split="none").load()
    assert splits.val is None and len(splits.test) == 4


def test_channel_stats_constant_channel_gets_unit_std() -> None:
    mean, std = channel_stats(torch.full((3, 2, 4, 4), 51, dtype=torch.uint8))
    assert mean.tolist() == pytest.approx([0.2, 0.2]) and std.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("fashion_mnist", "FashionMNIST/raw/t10k-labels-idx1-ubyte"),
        ("emnist", "EMNIST/raw/emnist-balanced-train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("cifar100", "cifar-100-python/train"),
    ],
)
def test_missing_files_error_names_files_and_how_to_fetch(name: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(FederatedConfigError, match="not found") as info:
        TorchvisionDataset(name, root=str(tmp_path)).load()
    message = str(info.value)
    assert str(tmp_path / expected) in message
    assert "download=True" in message and "by hand" in message


def test_gzipped_mnist_files_are_pointed_out(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    for path in expected_files("mnist", tmp_path):
        path.rename(path.with_name(path.name + ".gz"))
    with pytest.raises(FederatedConfigError, match="gunzip them in place"):
        TorchvisionDataset("mnist", root=str(tmp_path)).load()


def test_emnist_split_files_are_per_split(tmp_path: Path) -> None:
    write_emnist(tmp_path, split="digits")
    assert len(TorchvisionDataset("emnist", root=str(tmp_path), emnist_split="digits").load().train) == 6
    with pytest.raises(FederatedConfigError, match="emnist-balanced-train-images-idx3-ubyte"):
        TorchvisionDataset("emnist", root=str(tmp_path)).load()


def test_cifar_files_failing_md5_are_reported_as_corrupt(tmp_path: Path) -> None:
    write_cifar10(tmp_path)  # tiny files do not match the official checksums
    with pytest.raises(FederatedConfigError, match=r"exist but torchvision rejected them.*md5"):
        TorchvisionDataset("cifar10", root=str(tmp_path)).load()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "svhn"}, r"name must be one of \['mnist', 'fashion_mnist', 'emnist', 'cifar10', 'cifar100'\]"),
        ({"name": "mnist", "val_split": "train"}, r"val_split must be one of \['test', 'none'\], got 'train'"),
        ({"name": "emnist", "emnist_split": "kanji"}, r"emnist_split must be one of .*'balanced'.*got 'kanji'"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str, tmp_path: Path) -> None:
    with pytest.raises(FederatedConfigError, match=match):
        TorchvisionDataset(root=str(tmp_path), **kwargs)
