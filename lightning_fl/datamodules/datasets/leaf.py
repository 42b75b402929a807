"""LEAF benchmark data (Caldas et al., 2018) read from the JSON files that LEAF's own scripts write.

LEAF's ``preprocess.sh`` (for example ``./preprocess.sh -s niid --sf 0.05 -k 0 -t sample`` in
``leaf/data/femnist``) leaves ``data/train/*.json`` and ``data/test/*.json``; pass that ``data`` folder as
``root``. Each file holds ``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_fl.datamodules.datasets.base import DatasetSource, InMemoryDataset, Splits
from lightning_fl.exceptions import FederatedConfigError

ALL_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
"""LEAF's 80-character Shakespeare vocabulary (``leaf/models/utils/language_utils.py``); index = position."""

LEAF_NAMES = ("femnist", "shakespeare", "generic")
VAL_SPLITS = ("test", "none")

_UserData = dict[str, dict[str, list[Any]]]


def encode_characters(text: str, where: str) -> list[int]:
    """Map each character of ``text`` to its index in :data:`ALL_LETTERS`.

    Args:
        text: Characters to encode.
        where: Where ``text`` came from, for the error message.

    Returns:
        One index per character.

    Raises:
        FederatedConfigError: If a character is not in LEAF's vocabulary.

    Example:
        >>> encode_characters("Hi!", "example")
        [32, 61, 2]
    """
    indices = [ALL_LETTERS.find(c) for c in text]
    if -1 in indices:
        bad = text[indices.index(-1)]
        raise FederatedConfigError(f"character {bad!r} in {where} is not in LEAF's vocabulary ALL_LETTERS")
    return indices


def _read_split(folder: Path) -> _UserData:
    """Merge the ``user_data`` of every JSON file in ``folder`` (a user may span files)."""
    merged: _UserData = {}
    for path in sorted(folder.glob("*.json")):
        with path.open() as f:
            content = json.load(f)
        if "user_data" not in content:
            raise FederatedConfigError(f"LEAF file {path} has no 'user_data' key, got keys {sorted(content)}")
        for user, data in content["user_data"].items():
            if len(data["x"]) != len(data["y"]):
                raise FederatedConfigError(
                    f"LEAF file {path}: user {user!r} has {len(data['x'])} inputs but {len(data['y'])} labels"
                )
            entry = merged.setdefault(user, {"x": [], "y": []})
            entry["x"].extend(data["x"])
            entry["y"].extend(data["y"])
    return merged


def _to_dataset(users: _UserData, user_index: dict[str, int], name: str, split: str) -> InMemoryDataset:
    """Convert one split's user data to tensors, users in ``user_index`` order."""
    xs, ys, groups = [], [], []
    for user in sorted(users):
        x, y = users[user]["x"], users[user]["y"]
        if not y:
            continue
        where = f"{split} data of user {user!r}"
        if name == "shakespeare":
            xs.append(np.array([encode_characters(s, where) for s in x], dtype=np.int64))
            ys.append(np.array([encode_characters(c, where)[0] for c in y], dtype=np.int64))
        else:
            xs.append(np.asarray(x, dtype=np.float32))
            ys.append(np.asarray(y, dtype=np.int64))
        groups.append(np.full(len(y), user_index[user], dtype=np.int64))
    if not xs:
        raise FederatedConfigError(f"LEAF {split} split has no samples")
    inputs = torch.from_numpy(np.concatenate(xs))
    if name == "femnist":
        if inputs.ndim != 2 or inputs.shape[1] != 784:
            raise FederatedConfigError(f"FEMNIST x must be lists of 784 pixels, got shape {tuple(inputs.shape[1:])}")
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
        >>> import tempfile
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
            FederatedConfigError: If a folder or its JSON files are missing, a user's ``x`` and ``y`` differ in
                length, or a Shakespeare character is outside LEAF's vocabulary.
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
        users = {split: _read_split(folder) for split, folder in folders.items()}
        user_index = {user: i for i, user in enumerate(sorted(set(users["train"]) | set(users["test"])))}
        train = _to_dataset(users["train"], user_index, self.name, "train")
        held_out = _to_dataset(users["test"], user_index, self.name, "test")
        if self.val_split == "test":
            return Splits(train=train, val=held_out)
        return Splits(train=train, test=held_out)
