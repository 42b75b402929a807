"""Class labels of a dataset's samples, read only for partitioners and callbacks that need them.

A dataset's labels come from, in this order: a ``label_fn`` given to the data module (a function of one sample),
the dataset's ``targets`` attribute, or the samples themselves when they are ``(input, label)`` pairs or dicts
with a scalar ``"label"``/``"labels"`` entry. Anything else (language-model samples whose second element is a
token sequence, dicts without a scalar label) gets an error that says how to provide labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_fl.exceptions import FederatedConfigError

LabelFn = Callable[[Any], Any]

_HOW = (
    "give the dataset a `targets` attribute (one integer per sample), or pass FederatedDataModule(label_fn=f) with "
    "f(sample) -> int (e.g. label_fn=lambda sample: sample['label']), or use a partitioner that needs no labels "
    "(IIDPartitioner, QuantitySkewPartitioner, NaturalPartitioner)"
)


def dataset_labels(
    dataset: Dataset, label_fn: LabelFn | None = None, needed_by: str = "this partitioner"
) -> np.ndarray:
    """Integer class label of every sample of ``dataset``.

    Args:
        dataset: A map-style dataset.
        label_fn: A function of one sample (``dataset[i]``) returning its integer label; overrides ``targets``.
        needed_by: Who asks, named in the error message.

    Returns:
        An ``int64`` array of shape (N,) (or the dataset's ``targets`` as an array, whatever their type).

    Raises:
        FederatedConfigError: If a sample has no integer label that can be found, naming the ways to provide one.

    Example:
        >>> dataset_labels([(0.5, 1), (0.7, 0)]).tolist()
        [1, 0]
        >>> dataset_labels([{"x": 0.5, "label": 2}]).tolist()
        [2]
        >>> dataset_labels([{"input_ids": [1, 2], "labels": [2, 3]}], label_fn=lambda s: len(s["labels"])).tolist()
        [2]
    """
    n = len(dataset)  # type: ignore[arg-type]
    if label_fn is None:
        targets = getattr(dataset, "targets", None)
        if targets is not None:
            if isinstance(targets, torch.Tensor):
                return targets.cpu().numpy()
            return np.asarray(targets)
    read = label_fn if label_fn is not None else _sample_label
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        sample = dataset[i]
        value = read(sample)
        label = _as_int(value)
        if label is None:
            raise FederatedConfigError(_describe_failure(i, sample, value, label_fn is not None, needed_by))
        out[i] = label
    return out


def _sample_label(sample: Any) -> Any:
    """The label inside one sample: the second element of a pair, or a dict's ``label``/``labels`` entry."""
    if isinstance(sample, Mapping):
        for key in ("label", "labels"):
            if key in sample:
                return sample[key]
        return None
    if isinstance(sample, (tuple, list)) and len(sample) >= 2:
        return sample[1]
    return None


def _as_int(value: Any) -> int | None:
    """``value`` as an ``int`` if it is one integer-valued scalar (Python, numpy or a one-element tensor)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if int(np.prod(value.shape)) != 1:
            return None
        value = value.reshape(-1)[0].item()
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real) and float(value).is_integer():
        return int(float(value))
    return None


def _describe_failure(index: int, sample: Any, value: Any, from_fn: bool, needed_by: str) -> str:
    """Why sample ``index`` has no usable label, and how to provide one."""
    if from_fn:
        return f"label_fn must return one integer per sample, got {_summary(value)} for dataset[{index}]"
    if isinstance(sample, Mapping):
        found = "no scalar 'label' or 'labels' entry" if value is None else f"'label(s)' = {_summary(value)}"
        what = f"dataset[{index}] is a dict with keys {sorted(map(str, sample))} and {found}"
    elif isinstance(sample, (tuple, list)) and len(sample) >= 2:
        what = f"the second element of dataset[{index}] is {_summary(value)}, not one integer class label"
    else:
        what = f"dataset[{index}] is {_summary(sample)}, not an (input, label) pair"
    return f"{needed_by} needs an integer class label per sample, but {what}; {_HOW}"


def _summary(value: Any) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"a {type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"{type(value).__name__} {value!r}"[:80]
