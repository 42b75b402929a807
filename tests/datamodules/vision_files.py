"""Writers of tiny image datasets in the real on-disk formats that torchvision reads (test helpers).

- MNIST family: IDX ("SN3 Pascal Vincent") files: a big-endian header ``0x00000803`` (ubyte, 3 dims) for images
  or ``0x00000801`` (ubyte, 1 dim) for labels, one big-endian uint32 per dimension, then the raw bytes.
- CIFAR: Python pickles of dicts with a ``"data"`` uint8 array of shape (N, 3072) (channel-major rows) and
  ``"labels"`` (CIFAR-10) or ``"fine_labels"``/``"coarse_labels"`` (CIFAR-100), plus a metadata pickle.

torchvision md5-checks the CIFAR files against the official release, which tiny files cannot pass;
:func:`cifar_checksum_tables` gives the checksum tables of the tiny files so that a test can point torchvision's
class attributes at them (its real integrity check then runs unchanged).
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array (1 or 3 dims) as an uncompressed IDX file."""
    magic = {1: LABELS_MAGIC, 3: IMAGES_MAGIC}[array.ndim]
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def random_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Random uint8 images."""
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_mnist_like(
    root: Path, folder: str, file_prefixes: dict[str, str], n_train: int, n_test: int, num_classes: int, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write ``<root>/<folder>/raw/<prefix>-{images-idx3,labels-idx1}-ubyte`` for the train and test prefixes.

    Args:
        root: Dataset root.
        folder: ``"MNIST"``, ``"FashionMNIST"`` or ``"EMNIST"`` (torchvision's class name).
        file_prefixes: ``{"train": prefix, "test": prefix}``.
        n_train: Number of training images.
        n_test: Number of test images.
        num_classes: Labels are drawn from ``range(num_classes)``.
        seed: Seed of the random pixels and labels.

    Returns:
        ``{"train": (images, labels), "test": (images, labels)}`` as written, images uint8 (N, 28, 28).
    """
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = random_images(rng, n, (28, 28))
        labels = rng.integers(0, num_classes, size=n).astype(np.uint8)
        raw = root / folder / "raw"
        write_idx(raw / f"{file_prefixes[split]}-images-idx3-ubyte", images)
        write_idx(raw / f"{file_prefixes[split]}-labels-idx1-ubyte", labels)
        written[split] = (images, labels)
    return written


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 6, n_test: int = 4, seed: int = 0):
    """Tiny MNIST or Fashion-MNIST (``folder="FashionMNIST"``) in ``<root>/<folder>/raw``."""
    return write_mnist_like(root, folder, {"train": "train", "test": "t10k"}, n_train, n_test, 10, seed)


def write_emnist(root: Path, split: str = "balanced", n_train: int = 6, n_test: int = 4, seed: int = 0):
    """Tiny EMNIST as torchvision leaves it after download: uncompressed files in ``<root>/EMNIST/raw``."""
    from torchvision.datasets import EMNIST

    prefixes = {"train": f"emnist-{split}-train", "test": f"emnist-{split}-test"}
    return write_mnist_like(root, "EMNIST", prefixes, n_train, n_test, len(EMNIST.classes_split_dict[split]), seed)


def _write_pickle(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(content, f, protocol=2)


def _cifar_batch(rng: np.random.Generator, n: int, num_classes: int, label_key: str) -> tuple[dict, np.ndarray]:
    """One CIFAR pickle dict and its images as (N, 3, 32, 32)."""
    images = random_images(rng, n, (3, 32, 32))
    labels = rng.integers(0, num_classes, size=n).tolist()
    content = {"batch_label": "tiny", label_key: labels, "data": images.reshape(n, 3072), "filenames": ["x.png"] * n}
    return content, images


def write_cifar10(root: Path, per_batch: int = 2, n_test: int = 3, seed: int = 0):
    """Tiny CIFAR-10 in ``<root>/cifar-10-batches-py``: five training batches, a test batch, ``batches.meta``.

    Returns:
        ``{"train": (images, labels), "test": (images, labels)}``, images uint8 (N, 3, 32, 32).
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    train_images, train_labels = [], []
    for i in range(1, 6):
        content, images = _cifar_batch(rng, per_batch, 10, "labels")
        _write_pickle(folder / f"data_batch_{i}", content)
        train_images.append(images)
        train_labels.extend(content["labels"])
    content, test_images = _cifar_batch(rng, n_test, 10, "labels")
    _write_pickle(folder / "test_batch", content)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _write_pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return {
        "train": (np.concatenate(train_images), np.array(train_labels)),
        "test": (test_images, np.array(content["labels"])),
    }


def write_cifar100(root: Path, n_train: int = 5, n_test: int = 3, seed: int = 0):
    """Tiny CIFAR-100 in ``<root>/cifar-100-python``: ``train``, ``test`` and ``meta``.

    Returns:
        ``{"train": (images, fine_labels), "test": (images, fine_labels)}``, images uint8 (N, 3, 32, 32).
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        content, images = _cifar_batch(rng, n, 100, "fine_labels")
        content["coarse_labels"] = [label // 5 for label in content["fine_labels"]]
        _write_pickle(folder / split, content)
        written[split] = (images, np.array(content["fine_labels"]))
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    _write_pickle(folder / "meta", meta)
    return written


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def cifar_checksum_tables(cls: type, root: Path) -> dict[str, object]:
    """torchvision's ``train_list``, ``test_list`` and ``meta`` class attributes for the files under ``root``.

    Args:
        cls: ``torchvision.datasets.CIFAR10`` or ``CIFAR100``.
        root: Root the tiny files were written to.

    Returns:
        ``{attribute: value}`` with the md5 sums of the tiny files, for ``monkeypatch.setattr(cls, ...)``.
    """
    folder = root / cls.base_folder
    return {
        "train_list": [[name, _md5(folder / name)] for name, _ in cls.train_list],
        "test_list": [[name, _md5(folder / name)] for name, _ in cls.test_list],
        "meta": {**cls.meta, "md5": _md5(folder / cls.meta["filename"])},
    }
