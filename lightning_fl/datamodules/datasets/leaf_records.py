"""Reading and checking the records of LEAF's JSON files.

Every user's ``x`` and ``y`` become NumPy arrays here, or a :class:`~lightning_fl.exceptions.DataFileError` names the
file, the user, the sample and what is wrong: invalid JSON, a missing key, ragged or non-numeric inputs, NaN pixels,
labels that are not integers (``0.7`` is refused, never truncated) or lie outside the format's classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lightning_fl.exceptions import DataFileError

ALL_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
"""LEAF's 80-character Shakespeare vocabulary (``leaf/models/utils/language_utils.py``); index = position."""

FEMNIST_CLASSES = 62
"""FEMNIST's classes: 10 digits, 26 upper- and 26 lower-case letters."""


def encode_characters(text: str, where: str) -> list[int]:
    """Map each character of ``text`` to its index in :data:`ALL_LETTERS`.

    Args:
        text: Characters to encode.
        where: Where ``text`` came from, for the error message.

    Returns:
        One index per character.

    Raises:
        DataFileError: If a character is not in LEAF's vocabulary.

    Example:
        >>> encode_characters("Hi!", "example")
        [32, 61, 2]
    """
    indices = [ALL_LETTERS.find(c) for c in text]
    if -1 in indices:
        bad = text[indices.index(-1)]
        raise DataFileError(f"character {bad!r} in {where} is not in LEAF's vocabulary ALL_LETTERS")
    return indices


def user_arrays(path: Path, user: str, data: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One user's checked ``(x, y)`` from a LEAF file: float32 inputs (int64 character codes for Shakespeare) and
    int64 labels.

    Args:
        path: The file, for error messages.
        user: The user's name.
        data: The user's entry of ``user_data``: ``{"x": [...], "y": [...]}``.
        name: ``"femnist"``, ``"shakespeare"`` or ``"generic"``.

    Returns:
        ``(x, y)`` with one row of ``x`` per label.

    Raises:
        DataFileError: Naming the file, the user, the sample and what is wrong.

    Example:
        >>> user_arrays(Path("f.json"), "u0", {"x": [[0.0, 1.0]], "y": [0.7]}, "generic")
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.DataFileError: LEAF file f.json: user 'u0', sample 0: label must be an integer >= 0, \
got 0.7
    """
    where = f"LEAF file {path}: user {user!r}"
    if not isinstance(data, dict) or not isinstance(data.get("x"), list) or not isinstance(data.get("y"), list):
        raise DataFileError(f"{where} must hold {{'x': [...], 'y': [...]}} (two lists), got {_short(data)}")
    x, y = data["x"], data["y"]
    if len(x) != len(y):
        raise DataFileError(f"{where} has {len(x)} inputs but {len(y)} labels")
    if not y:  # a user without samples in this file: nothing to check, nothing to add
        return np.zeros((0,), dtype=np.float32), np.zeros(0, dtype=np.int64)
    if name == "shakespeare":
        return _shakespeare(where, x, y)
    labels = _labels(where, y, FEMNIST_CLASSES if name == "femnist" else None)
    inputs = _numbers(where, x)
    if name == "femnist" and inputs.shape[1:] != (784,):
        raise DataFileError(f"{where}: FEMNIST x must be lists of 784 pixels, got shape {inputs.shape[1:]}")
    return inputs, labels


def _shakespeare(where: str, x: list[Any], y: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    codes: list[list[int]] = []
    labels: list[int] = []
    for i, (text, label) in enumerate(zip(x, y, strict=True)):
        record = f"{where}, sample {i}"
        if not isinstance(text, str) or (codes and len(text) != len(codes[0])):
            length = f" of {len(codes[0])} characters, as sample 0" if codes else ""
            raise DataFileError(f"{record}: x must be a string{length}, got {_short(text)}")
        if not isinstance(label, str) or len(label) != 1:
            raise DataFileError(f"{record}: y must be one character, got {_short(label)}")
        codes.append(encode_characters(text, record))
        labels.append(encode_characters(label, record)[0])
    return np.array(codes, dtype=np.int64).reshape(len(x), -1), np.array(labels, dtype=np.int64)


def _labels(where: str, y: list[Any], num_classes: int | None) -> np.ndarray:
    """Integer labels in ``[0, num_classes)``; ``3.0`` is 3, ``0.7``, ``True`` and ``"3"`` are refused."""
    allowed = f"an integer in [0, {num_classes - 1}]" if num_classes is not None else "an integer >= 0"
    for i, label in enumerate(y):
        ok = isinstance(label, (int, float)) and not isinstance(label, bool) and float(label).is_integer()
        if not ok or label < 0 or (num_classes is not None and label >= num_classes):
            raise DataFileError(f"{where}, sample {i}: label must be {allowed}, got {_short(label)}")
    return np.array(y, dtype=np.int64).reshape(len(y))


def _numbers(where: str, x: list[Any]) -> np.ndarray:
    """Same-shape nested lists of finite numbers as float32 (N, ...)."""
    try:
        inputs = np.array(x, dtype=np.float32)
    except (TypeError, ValueError):
        inputs = None
    if inputs is None or inputs.ndim < 2 or not np.isfinite(inputs).all():
        first = _first_bad_input(x)
        raise DataFileError(f"{where}, sample {first[0]}: x {first[1]}")
    return inputs


def _first_bad_input(x: list[Any]) -> tuple[int, str]:
    """The first sample that is not a finite numeric list shaped like sample 0, and what is wrong with it."""
    shape: tuple[int, ...] | None = None
    for i, sample in enumerate(x):
        try:
            array = np.array(sample, dtype=np.float32)
        except (TypeError, ValueError):
            return i, f"must be a (nested) list of numbers, got {_short(sample)}"
        if array.ndim == 0:
            return i, f"must be a list of numbers, got {_short(sample)}"
        if not np.isfinite(array).all():
            return i, f"must hold finite numbers, got {_short(sample)}"
        if shape is not None and array.shape != shape:
            return i, f"has shape {array.shape}, but sample 0 has shape {shape}"
        shape = array.shape
    return 0, "cannot be read as numbers"  # pragma: no cover - np.array fails only for one of the reasons above


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
