"""LEAF benchmark data (Caldas et al., 2018) read from the JSON files that LEAF's own scripts write.

LEAF's ``preprocess.sh`` (for example ``./preprocess.sh -s niid --sf 0.05 -k 0 -t sample`` in
``leaf/data/femnist``) leaves ``data/train/*.json`` and ``data/test/*.json``; pass that ``data`` folder as
``root``. Each file holds ``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lightning_fl.datamodules.datasets.base import DatasetSource, InMemoryDataset, Splits
from lightning_fl.datamodules.datasets.leaf_records import ALL_LETTERS, encode_characters, user_arrays
from lightning_fl.exceptions import DataFileError, FederatedConfigError
from lightning_fl.json_files import read_json

LEAF_NAMES = ("femnist", "shakespeare", "generic")
VAL_SPLITS = ("test", "none")

__all__ = ["ALL_LETTERS", "LEAF_NAMES", "VAL_SPLITS", "LeafDataset", "encode_characters"]


@dataclass
class _UserRecords:
    """One user's arrays from every file that holds the user (a user may span files)."""

    sources: list[Path] = field(default_factory=list)
    xs: list[np.ndarray] = field(default_factory=list)
    ys: list[np.ndarray] = field(default_factory=list)


def _read_split(folder: Path, name: str) -> dict[str, _UserRecords]:
    """Read and check every JSON file in ``folder``, merging users that span files."""
    merged: dict[str, _UserRecords] = {}
    for path in sorted(folder.glob("*.json")):
        content = read_json(path)
        if not isinstance(content, dict) or not isinstance(content.get("user_data"), dict):
            found = f"keys {sorted(content)}" if isinstance(content, dict) else type(content).__name__
            raise DataFileError(f"LEAF file {path} must hold an object with a 'user_data' object, got {found}")
        for user, data in content["user_data"].items():
            x, y = user_arrays(path, user, data, name)
            entry = merged.setdefault(user, _UserRecords())
            entry.sources.append(path)
            entry.xs.append(x)
            entry.ys.append(y)
    return merged


def _to_dataset(users: dict[str, _UserRecords], user_index: dict[str, int], name: str, split: str) -> InMemoryDataset:
    """Concatenate one split's users, in ``user_index`` order, after checking that every input has one shape."""
    xs, ys, groups = [], [], []
    first: tuple[tuple[int, ...], str] | None = None
    for user in sorted(users):
        for path, x, y in zip(users[user].sources, users[user].xs, users[user].ys, strict=True):
            if not len(y):
                continue
            if first is None:
                first = (x.shape[1:], f"user {user!r} in {path}")
            elif x.shape[1:] != first[0]:
                raise DataFileError(
                    f"LEAF file {path}: user {user!r} has inputs of shape {x.shape[1:]}, but {first[1]} has "
                    f"{first[0]}; every sample must have one shape"
                )
            xs.append(x)
            ys.append(y)
            groups.append(np.full(len(y), user_index[user], dtype=np.int64))
    if not xs:
        raise FederatedConfigError(f"LEAF {split} split has no samples")
    inputs = torch.from_numpy(np.concatenate(xs))
    if name == "femnist":  # user_arrays checked that every sample holds 784 pixels
        inputs = inputs.reshape(-1, 1, 28, 28)
    return InMemoryDataset(inputs, torch.from_numpy(np.concatenate(ys)), groups=np.concatenate(groups))


class LeafDataset(DatasetSource):
    """A LEAF dataset with its natural clients (writers, speaking roles) as ``groups``.

    Users are sorted by name over train and test together and numbered from 0, so a user has the same
    ``groups`` index in both splits. Formats:

    - ``"femnist"``: ``x`` is 784 floats (LEAF's [0, 1] pixels, stored as written) -> float32 (N, 1, 28, 28);
      ``y`` an int (62 classes).
    - ``"shakespeare"``: ``x`` an 80-character string, ``y`` the next character; both encoded with LEAF's
      :data:`ALL_LETTERS` -> int64 inputs (N, 80) and int64 labels (80 classes).
    - ``"generic"``: ``x`` any fixed-shape nested list of numbers -> float32 (N, *shape); ``y`` an int.

    Everything is held in memory: full FEMNIST (about 800k images) takes about 2.5 GB as float32, and parsing
    its JSON takes minutes; LEAF's ``--sf`` sampling fraction makes smaller versions.

    Args:
        root: Folder holding ``train/*.json`` and ``test/*.json`` (LEAF's ``data/<name>/data``).
        name: Format of ``x`` and ``y``: ``"femnist"``, ``"shakespeare"`` or ``"generic"``.
        val_split: ``"test"`` returns LEAF's test split as ``val`` (``test=None``) so that it is evaluated every
            round; ``"none"`` returns it as ``test`` with no ``val``.

    Raises:
        FederatedConfigError: If ``name`` or ``val_split`` is not allowed; :meth:`load` raises it for a missing
            folder or malformed data.

    Example:
        >>> import json, tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for split in ("train", "test"):
        ...     (root / split).mkdir()
        ...     data = {"u1": {"x": [[0.5, 1.0]], "y": [1]}, "u0": {"x": [[2.0, 0.0]], "y": [0]}}
        ...     content = {"users": ["u1", "u0"], "num_samples": [1, 1], "user_data": data}
        ...     _ = (root / split / "all_data.json").write_text(json.dumps(content))
        >>> splits = LeafDataset(str(root), name="generic").load()
        >>> splits.train.groups.tolist(), splits.val.targets.tolist()
        ([0, 1], [0, 1])
    """

    def __init__(self, root: str, name: str = "femnist", val_split: str = "test") -> None:
        if name not in LEAF_NAMES:
            raise FederatedConfigError(f"name must be one of {list(LEAF_NAMES)}, got {name!r}")
        if val_split not in VAL_SPLITS:
            raise FederatedConfigError(f"val_split must be one of {list(VAL_SPLITS)}, got {val_split!r}")
        self.root = root
        self.name = name
        self.val_split = val_split

    def load(self) -> Splits:
        """Read ``<root>/train/*.json`` and ``<root>/test/*.json``.

        Raises:
            FederatedConfigError: If a folder or its JSON files are missing.
            DataFileError: If a file is not valid JSON or a record is malformed (``x`` and ``y`` of different
                lengths, inputs that are ragged, not numbers or not finite, labels that are not integers in the
                format's range, a Shakespeare character outside LEAF's vocabulary), naming the file, user and sample.
        """
        root = Path(self.root).expanduser()
        folders = {split: root / split for split in ("train", "test")}
        for folder in folders.values():
            if not any(folder.glob("*.json")):
                raise FederatedConfigError(
                    f"LeafDataset(root={self.root!r}) expects LEAF's JSON files in {folder}/*.json, found none. "
                    "The layout is <root>/train/*.json and <root>/test/*.json, each file holding "
                    '{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}; '
                    "LEAF's own scripts write it (https://github.com/TalwalkarLab/leaf: run "
                    f"./preprocess.sh ... -t sample in leaf/data/{self.name} and pass its data/ folder as root)"
                )
        users = {split: _read_split(folder, self.name) for split, folder in folders.items()}
        user_index = {user: i for i, user in enumerate(sorted(set(users["train"]) | set(users["test"])))}
        train = _to_dataset(users["train"], user_index, self.name, "train")
        held_out = _to_dataset(users["test"], user_index, self.name, "test")
        if self.val_split == "test":
            return Splits(train=train, val=held_out)
        return Splits(train=train, test=held_out)
