"""torchvision image datasets (MNIST, Fashion-MNIST, EMNIST, CIFAR-10/100) read from a local folder.

Nothing is downloaded unless ``download=True`` is passed. The images are converted once into an
:class:`InMemoryDataset` of normalised float32 tensors, because the federated loader indexes whole batches of
tensors rather than collating PIL images one by one. The memory this takes (float32, train + test):

=================  ============
MNIST / Fashion    ~ 220 MB (train alone ~ 190 MB)
EMNIST balanced    ~ 420 MB (byclass: ~ 2.5 GB)
CIFAR-10 / 100     ~ 740 MB
=================  ============

On-disk layouts torchvision 0.26 reads (``root`` is what you pass):

- MNIST / Fashion-MNIST: ``<root>/MNIST/raw/`` (``<root>/FashionMNIST/raw/``) with the four *uncompressed* IDX
  files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``. Only their presence is checked (no md5).
- EMNIST: ``<root>/EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte``, uncompressed.
  NIST ships them as ``gzip.zip`` holding ``gzip/*.gz``; ``download=True`` unzips and gunzips them into ``raw/``.
  The EMNIST files store each image transposed; torchvision (and so this class) keeps them as stored, which
  does not matter to a model trained on them (``x.transpose(-1, -2)`` shows them upright).
- CIFAR-10: ``<root>/cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
  ``batches.meta``; CIFAR-100: ``<root>/cifar-100-python/`` with ``train``, ``test`` and ``meta``. torchvision
  md5-checks every one of these files against the official release.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import datasets

from lightning_fl.checks import check_bool
from lightning_fl.datamodules.datasets.base import DatasetSource, InMemoryDataset, Splits
from lightning_fl.datamodules.datasets.idx import check_idx_pair
from lightning_fl.exceptions import DataFileError, FederatedConfigError

VISION_CLASSES: dict[str, type[datasets.VisionDataset]] = {
    "mnist": datasets.MNIST,
    "fashion_mnist": datasets.FashionMNIST,
    "emnist": datasets.EMNIST,
    "cifar10": datasets.CIFAR10,
    "cifar100": datasets.CIFAR100,
}
"""The torchvision class behind each ``name``."""

VAL_SPLITS = ("test", "none")


def expected_files(name: str, root: str | Path, emnist_split: str = "balanced") -> list[Path]:
    """The files torchvision reads for ``name`` under ``root``, taken from torchvision's own class attributes.

    Args:
        name: One of :data:`VISION_CLASSES`.
        root: The dataset root passed to torchvision.
        emnist_split: EMNIST split (only used for ``"emnist"``).

    Returns:
        Absolute-or-relative paths as ``root`` is, train files first.

    Example:
        >>> [p.as_posix() for p in expected_files("mnist", "data")][:2]
        ['data/MNIST/raw/train-images-idx3-ubyte', 'data/MNIST/raw/train-labels-idx1-ubyte']
        >>> expected_files("cifar100", "data")[-1].as_posix()
        'data/cifar-100-python/meta'
    """
    cls = VISION_CLASSES[name]
    root = Path(root)
    if cls is datasets.EMNIST:
        return [
            root / "EMNIST" / "raw" / f"emnist-{emnist_split}-{part}-{kind}"
            for part in ("train", "test")
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
        ]
    if issubclass(cls, datasets.MNIST):
        return [root / cls.__name__ / "raw" / filename.removesuffix(".gz") for filename, _ in cls.resources]
    assert issubclass(cls, datasets.CIFAR10)
    files = [filename for filename, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [root / cls.base_folder / filename for filename in files]


def _fetch_hint(name: str, root: Path, emnist_split: str) -> str:
    """How to put the files in place: the download flag, or by hand."""
    cls = VISION_CLASSES[name]
    once = "Pass download=True once on a machine with internet access (torchvision then fetches"
    if cls is datasets.EMNIST:
        return (
            f"{once} {cls.url}, ~540 MB, and unpacks it), or copy the files there by hand: unzip gzip.zip and "
            f"gunzip its gzip/emnist-{emnist_split}-*.gz files into {root / 'EMNIST' / 'raw'}/."
        )
    if issubclass(cls, datasets.MNIST):
        return (
            f"{once} the four .gz files and unpacks them), or copy the uncompressed IDX files there by hand "
            "(gunzip the official .gz files)."
        )
    assert issubclass(cls, datasets.CIFAR10)
    return (
        f"{once} {cls.url} and extracts it), or copy the official files there by hand: "
        f"tar -xzf {cls.filename} -C {root}."
    )


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and (population) std of uint8 images in [0, 1] scale, from pixel-value histograms.

    Args:
        images: uint8 tensor (N, C, H, W).

    Returns:
        ``(mean, std)``, float64 tensors of shape (C,); a constant channel gets std 1.

    Example:
        >>> mean, std = channel_stats(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1))
        >>> mean.tolist(), std.tolist()
        ([0.5], [0.5])
    """
    values = torch.arange(256, dtype=torch.int64)
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256)
        # Integer sums keep the variance exact: (n * sum v^2 - (sum v)^2) / (255 n)^2 with v in 0..255.
        n, s1, s2 = int(counts.sum()), int((counts * values).sum()), int((counts * values**2).sum())
        means.append(s1 / (255 * n))
        scaled_var = n * s2 - s1 * s1
        stds.append(scaled_var**0.5 / (255 * n) if scaled_var > 0 else 1.0)
    return torch.tensor(means, dtype=torch.float64), torch.tensor(stds, dtype=torch.float64)


def _as_uint8_nchw(dataset: Dataset) -> torch.Tensor:
    """torchvision's raw image array as a uint8 (N, C, H, W) tensor (MNIST family: (N, H, W); CIFAR: NHWC)."""
    data = dataset.data  # type: ignore[attr-defined]
    if isinstance(data, np.ndarray):
        return torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    return data.unsqueeze(1)


def _to_float(images: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1], then ``(x - mean) / std`` per channel when stats are given (in place)."""
    out = images.to(torch.float32).div_(255)
    if mean is not None and std is not None:
        out.sub_(mean.to(torch.float32).view(1, -1, 1, 1)).div_(std.to(torch.float32).view(1, -1, 1, 1))
    return out


class TorchvisionDataset(DatasetSource):
    """MNIST, Fashion-MNIST, EMNIST, CIFAR-10 or CIFAR-100 from a local folder, held in memory as tensors.

    Inputs are float32 (N, C, H, W) (C = 1 for the MNIST family, 3 for CIFAR), labels int64 (N,), ``groups``
    ``None`` (partition the training set with a partitioner). With ``normalize=True`` every channel is
    standardised with the mean and std of the *training* images (the same statistics are applied to the test
    set); otherwise pixels are scaled to [0, 1]. After :meth:`load`, ``mean`` and ``std`` hold the statistics
    used. EMNIST ``letters`` labels run from 1 to 26 (torchvision keeps class 0 as ``"N/A"``).

    See the module docstring for the folder layout each name needs and the memory each takes.

    Args:
        name: ``"mnist"``, ``"fashion_mnist"``, ``"emnist"``, ``"cifar10"`` or ``"cifar100"``.
        root: Local folder holding the dataset files (see the module docstring), ``~`` expanded.
        download: Let torchvision download missing files into ``root``. Never happens when ``False``.
        val_split: ``"test"`` returns the official test set as ``val`` (``test=None``), so that it is evaluated
            every round; ``"none"`` returns it as ``test`` with no ``val``.
        normalize: Standardise per channel with the training set's mean and std.
        emnist_split: EMNIST split, one of torchvision's ``EMNIST.splits`` (only used for ``"emnist"``).

    Raises:
        FederatedConfigError: If ``name``, ``val_split`` or ``emnist_split`` is not allowed; :meth:`load` raises
            it when the files are missing or corrupt, naming the files torchvision expects.

    Example:
        >>> splits = TorchvisionDataset("mnist", root="~/data").load()  # doctest: +SKIP
        >>> splits.train.tensors[0].shape, splits.val.tensors[0].shape  # doctest: +SKIP
        (torch.Size([60000, 1, 28, 28]), torch.Size([10000, 1, 28, 28]))
    """

    def __init__(
        self,
        name: str,
        root: str,
        download: bool = False,
        val_split: str = "test",
        normalize: bool = True,
        emnist_split: str = "balanced",
    ) -> None:
        if name not in VISION_CLASSES:
            raise FederatedConfigError(f"name must be one of {list(VISION_CLASSES)}, got {name!r}")
        if val_split not in VAL_SPLITS:
            raise FederatedConfigError(f"val_split must be one of {list(VAL_SPLITS)}, got {val_split!r}")
        if emnist_split not in datasets.EMNIST.splits:
            raise FederatedConfigError(
                f"emnist_split must be one of {list(datasets.EMNIST.splits)}, got {emnist_split!r}"
            )
        self.name = name
        self.root = root
        self.download = check_bool("download", download)
        self.val_split = val_split
        self.normalize = check_bool("normalize", normalize)
        self.emnist_split = emnist_split
        self.mean: tuple[float, ...] | None = None
        self.std: tuple[float, ...] | None = None

    def load(self) -> Splits:
        """Read the train and test sets with torchvision and convert them to normalised tensors.

        Raises:
            FederatedConfigError: If torchvision cannot find the files, or they fail its md5 check (CIFAR).
            DataFileError: If an IDX file (MNIST family) is malformed or holds a label outside the classes.
        """
        train_raw, test_raw = self._read(train=True), self._read(train=False)
        train_images, test_images = _as_uint8_nchw(train_raw), _as_uint8_nchw(test_raw)
        mean, std = channel_stats(train_images) if self.normalize else (None, None)
        if mean is not None and std is not None:
            self.mean, self.std = tuple(mean.tolist()), tuple(std.tolist())
        train = InMemoryDataset(_to_float(train_images, mean, std), _targets(train_raw))
        held_out = InMemoryDataset(_to_float(test_images, mean, std), _targets(test_raw))
        if self.val_split == "test":
            return Splits(train=train, val=held_out)
        return Splits(train=train, test=held_out)

    def _read(self, train: bool) -> Dataset:
        """Construct the torchvision dataset, turning its bare RuntimeError into an error that says what to do.

        IDX files (the MNIST family) are checked first (headers, sizes, labels in range), and again after a
        download brought them; torchvision's own reader would stop at a bare ``assert``.
        """
        root = Path(self.root).expanduser()
        cls = VISION_CLASSES[self.name]
        kwargs = {"split": self.emnist_split} if cls is datasets.EMNIST else {}
        checked = self._check_idx(root, train)
        try:
            dataset = cls(str(root), train=train, download=self.download, **kwargs)  # type: ignore[call-arg]
        except RuntimeError as err:
            raise self._files_error(root, err) from err
        except (AssertionError, ValueError, TypeError) as err:  # a file torchvision's reader could not parse
            files = [str(f) for f in expected_files(self.name, root, self.emnist_split)]
            raise DataFileError(f"torchvision could not read the {self.name} files {files}: {err!r}") from err
        if not checked:
            self._check_idx(root, train)
        return dataset

    def _check_idx(self, root: Path, train: bool) -> bool:
        """Check this split's IDX files when they are present; whether they were (False for CIFAR)."""
        cls = VISION_CLASSES[self.name]
        if not issubclass(cls, datasets.MNIST):
            return False
        images, labels = expected_files(self.name, root, self.emnist_split)[0 if train else 2 :][:2]
        if not (images.is_file() and labels.is_file()):
            return False
        classes = datasets.EMNIST.classes_split_dict[self.emnist_split] if cls is datasets.EMNIST else cls.classes
        check_idx_pair(images, labels, len(classes))
        return True

    def _files_error(self, root: Path, err: RuntimeError) -> FederatedConfigError:
        """Say which files torchvision expects, which are missing, and how to fetch them."""
        files = expected_files(self.name, root, self.emnist_split)
        missing = [f for f in files if not f.is_file()]
        where = f"TorchvisionDataset(name={self.name!r}, root={self.root!r})"
        hint = _fetch_hint(self.name, root, self.emnist_split)
        if not missing:
            return FederatedConfigError(
                f"{where}: the files {[str(f) for f in files]} exist but torchvision rejected them ({err}); "
                f"they are truncated or not the official release (torchvision md5-checks them). Delete them, then "
                f"fetch them again. {hint}"
            )
        compressed = [f for f in missing if f.with_name(f.name + ".gz").is_file()]
        gz_note = ""
        if compressed:
            gz_note = f" Found gzip-compressed copies of {[f.name for f in compressed]}: gunzip them in place."
        return FederatedConfigError(
            f"{where}: dataset files not found (torchvision: {err}). torchvision expects {[str(f) for f in files]}; "
            f"missing {'all of them' if missing == files else [str(f) for f in missing]}.{gz_note} {hint}"
        )


def _targets(dataset: Dataset) -> torch.Tensor:
    """torchvision's labels (a tensor for the MNIST family, a list for CIFAR) as int64 (N,)."""
    return torch.as_tensor(dataset.targets, dtype=torch.int64)  # type: ignore[attr-defined]
