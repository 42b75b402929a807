"""Digits, FedProx Synthetic and LEAF sources, and the get_source registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from lightning_fl.datamodules.datasets import (
    DatasetSource,
    Digits,
    FedProxSynthetic,
    InMemoryDataset,
    LeafDataset,
    Splits,
    TorchvisionDataset,
    get_source,
    load_digits_dataset,
)
from lightning_fl.datamodules.datasets.leaf import ALL_LETTERS
from lightning_fl.datamodules.datasets.synthetic import MAX_CLIENT_SAMPLES
from lightning_fl.exceptions import FederatedConfigError

# ---------------------------------------------------------------- digits


def test_digits_split_is_stratified_seeded_and_standardised_with_train_stats() -> None:
    train, val = load_digits_dataset(val_fraction=0.2, seed=3)
    assert isinstance(train, InMemoryDataset) and val is not None
    assert len(train) + len(val) == 1797
    x, y = train.tensors
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    # Every class keeps ~20% of its samples in val.
    class_counts = np.bincount(load_digits().target)
    np.testing.assert_array_equal(np.bincount(val.targets.numpy()), np.round(0.2 * class_counts))
    # Global standardisation with the train pixels: train is exactly mean 0 / std 1, val uses the same transform.
    assert x.double().mean().item() == pytest.approx(0.0, abs=1e-5)
    assert x.double().std(correction=0).item() == pytest.approx(1.0, abs=1e-5)
    assert abs(val.tensors[0].double().mean().item()) < 0.1
    again, _ = load_digits_dataset(val_fraction=0.2, seed=3)
    assert torch.equal(again.tensors[0], x)
    other, _ = load_digits_dataset(val_fraction=0.2, seed=4)
    assert not torch.equal(other.targets, y)


def test_digits_without_val() -> None:
    splits = Digits(val_fraction=0.0).load()
    assert len(splits.train) == 1797 and splits.val is None and splits.test is None


@pytest.mark.parametrize("val_fraction", [-0.1, 1.0])
def test_digits_rejects_val_fraction(val_fraction: float) -> None:
    with pytest.raises(FederatedConfigError, match=rf"val_fraction must be in \[0, 1\), got {val_fraction}"):
        Digits(val_fraction=val_fraction)


# ---------------------------------------------------------------- FedProx synthetic


def test_synthetic_shapes_clients_and_per_client_val() -> None:
    source = FedProxSynthetic(alpha=1.0, beta=1.0, num_clients=8, dim=12, num_classes=5, val_fraction=0.25, seed=1)
    splits = source.load()
    x, y = splits.train.tensors
    assert x.shape[1] == 12 and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.min() >= 0 and y.max() < 5
    train_sizes = np.bincount(splits.train.groups, minlength=8)
    val_sizes = np.bincount(splits.val.groups, minlength=8)
    sizes = train_sizes + val_sizes
    assert (sizes >= 50).all() and (sizes <= MAX_CLIENT_SAMPLES).all()
    np.testing.assert_array_equal(val_sizes, np.round(0.25 * sizes))
    # Same seed, same data; another seed, other data.
    again = FedProxSynthetic(alpha=1.0, beta=1.0, num_clients=8, dim=12, num_classes=5, val_fraction=0.25, seed=1)
    assert torch.equal(again.load().train.tensors[0], x)
    assert not torch.equal(
        FedProxSynthetic(num_clients=8, dim=12, num_classes=5, seed=2).load().train.targets[:50], y[:50]
    )


def test_synthetic_matches_definition_input_distribution() -> None:
    """In the IID variant x ~ N(0, diag(j^-1.2)): check the per-coordinate variance on a big sample."""
    splits = FedProxSynthetic(num_clients=30, dim=10, iid=True, val_fraction=0.0, seed=0).load()
    x = splits.train.tensors[0].double()
    assert len(x) > 3000
    expected_var = torch.arange(1, 11, dtype=torch.float64) ** -1.2
    torch.testing.assert_close(x.var(dim=0), expected_var, rtol=0.1, atol=0.0)
    torch.testing.assert_close(x.mean(dim=0), torch.zeros(10, dtype=torch.float64), rtol=0.0, atol=0.05)


def test_synthetic_heterogeneity_grows_with_alpha_beta() -> None:
    """Non-IID clients have different label distributions; IID clients share one model and input law."""

    def label_spread(**kwargs: object) -> float:
        splits = FedProxSynthetic(num_clients=10, val_fraction=0.0, seed=0, **kwargs).load()
        g, y = splits.train.groups, splits.train.targets.numpy()
        hist = np.stack([np.bincount(y[g == k], minlength=10) / (g == k).sum() for k in range(10)])
        return float(np.abs(hist - hist.mean(axis=0)).sum(axis=1).mean())

    assert label_spread(iid=True) < label_spread(alpha=1.0, beta=1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": -1.0}, "alpha must be a finite number >= 0, got -1.0"),
        ({"num_clients": 0}, "num_clients must be an integer >= 1, got 0"),
        ({"num_classes": 1}, "num_classes must be an integer >= 2, got 1"),
        ({"val_fraction": 1.5}, r"val_fraction must be in \[0, 1\), got 1.5"),
    ],
)
def test_synthetic_rejects_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(FederatedConfigError, match=match):
        FedProxSynthetic(**kwargs)


# ---------------------------------------------------------------- LEAF


def _write_leaf(root: Path, split: str, files: list[dict[str, dict]]) -> None:
    """Write LEAF JSON files ``<root>/<split>/part<i>.json`` from ``[{user: {"x": [...], "y": [...]}}]``."""
    (root / split).mkdir(parents=True, exist_ok=True)
    for i, user_data in enumerate(files):
        content = {
            "users": list(user_data),
            "num_samples": [len(d["y"]) for d in user_data.values()],
            "user_data": user_data,
        }
        (root / split / f"part{i}.json").write_text(json.dumps(content))


def _pixels(value: float) -> list[float]:
    return [value] * 784


def test_leaf_femnist_groups_are_sorted_users_shared_across_splits(tmp_path: Path) -> None:
    _write_leaf(
        tmp_path,
        "train",
        [{"f_b": {"x": [_pixels(0.1), _pixels(0.2)], "y": [3, 4]}}, {"f_a": {"x": [_pixels(0.3)], "y": [61]}}],
    )
    _write_leaf(tmp_path, "test", [{"f_b": {"x": [_pixels(0.5)], "y": [7]}, "f_c": {"x": [_pixels(0.6)], "y": [0]}}])
    splits = LeafDataset(str(tmp_path), name="femnist").load()
    x, y = splits.train.tensors
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    # Users sorted by name over both splits: f_a -> 0, f_b -> 1, f_c -> 2.
    assert splits.train.groups.tolist() == [0, 1, 1] and y.tolist() == [61, 3, 4]
    assert x[:, 0, 0, 0].tolist() == pytest.approx([0.3, 0.1, 0.2])
    assert splits.val.groups.tolist() == [1, 2] and splits.val.targets.tolist() == [7, 0]
    assert splits.test is None


def test_leaf_shakespeare_encodes_with_leaf_vocabulary(tmp_path: Path) -> None:
    line = ("To be, or not to be: that is the question.\n" * 2)[:80]
    _write_leaf(tmp_path, "train", [{"HAMLET": {"x": [line, line[::-1]], "y": ["W", "}"]}}])
    _write_leaf(tmp_path, "test", [{"HAMLET": {"x": [line], "y": [" "]}}])
    splits = LeafDataset(str(tmp_path), name="shakespeare", val_split="none").load()
    x, y = splits.train.tensors
    assert x.shape == (2, 80) and x.dtype == torch.int64 and y.dtype == torch.int64
    assert "".join(ALL_LETTERS[i] for i in x[0].tolist()) == line
    assert y.tolist() == [ALL_LETTERS.index("W"), 79]
    assert splits.val is None and splits.test.targets.tolist() == [1]


def test_leaf_shakespeare_unknown_character(tmp_path: Path) -> None:
    _write_leaf(tmp_path, "train", [{"u": {"x": ["é" * 80], "y": ["a"]}}])
    _write_leaf(tmp_path, "test", [{"u": {"x": ["a" * 80], "y": ["a"]}}])
    with pytest.raises(FederatedConfigError, match=r"character 'é' in LEAF file .*part0\.json: user 'u', sample 0 "):
        LeafDataset(str(tmp_path), name="shakespeare").load()


def test_leaf_generic_numeric_inputs(tmp_path: Path) -> None:
    _write_leaf(tmp_path, "train", [{"u": {"x": [[[1, 2], [3, 4]]], "y": [1]}}])
    _write_leaf(tmp_path, "test", [{"u": {"x": [[[5, 6], [7, 8]]], "y": [0]}}])
    splits = LeafDataset(str(tmp_path), name="generic").load()
    assert splits.train.tensors[0].shape == (1, 2, 2) and splits.train.tensors[0].dtype == torch.float32


def test_leaf_missing_folder_describes_layout(tmp_path: Path) -> None:
    _write_leaf(tmp_path, "train", [{"u": {"x": [[1.0]], "y": [0]}}])
    with pytest.raises(FederatedConfigError, match=r"test/\*\.json, found none.*<root>/train/\*\.json.*preprocess"):
        LeafDataset(str(tmp_path), name="generic").load()


def test_leaf_mismatched_lengths_and_bad_femnist_shape(tmp_path: Path) -> None:
    _write_leaf(tmp_path, "train", [{"u": {"x": [[1.0], [2.0]], "y": [0]}}])
    _write_leaf(tmp_path, "test", [{"u": {"x": [[1.0]], "y": [0]}}])
    with pytest.raises(FederatedConfigError, match="user 'u' has 2 inputs but 1 labels"):
        LeafDataset(str(tmp_path), name="generic").load()
    _write_leaf(tmp_path, "train", [{"u": {"x": [[1.0]], "y": [0]}}])
    with pytest.raises(FederatedConfigError, match=r"FEMNIST x must be lists of 784 pixels, got shape \(1,\)"):
        LeafDataset(str(tmp_path), name="femnist").load()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "sent140"}, r"name must be one of \['femnist', 'shakespeare', 'generic'\], got 'sent140'"),
        ({"val_split": "val"}, r"val_split must be one of \['test', 'none'\], got 'val'"),
    ],
)
def test_leaf_rejects_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(FederatedConfigError, match=match):
        LeafDataset("data", **kwargs)


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("name", "kwargs", "cls"),
    [
        ("digits", {"seed": 1}, Digits),
        ("mnist", {"root": "data"}, TorchvisionDataset),
        ("cifar100", {"root": "data", "normalize": False}, TorchvisionDataset),
        ("synthetic", {"alpha": 0.0}, FedProxSynthetic),
        ("leaf", {"root": "data", "name": "shakespeare"}, LeafDataset),
    ],
)
def test_get_source_builds_each_kind(name: str, kwargs: dict, cls: type) -> None:
    source = get_source(name, **kwargs)
    assert isinstance(source, cls) and isinstance(source, DatasetSource)
    if cls is TorchvisionDataset:
        assert source.name == name


def test_get_source_loads() -> None:
    assert isinstance(get_source("digits").load(), Splits)


def test_get_source_unknown_name_lists_known_names() -> None:
    known = r"\['digits', 'mnist', 'fashion_mnist', 'emnist', 'cifar10', 'cifar100', 'synthetic', 'leaf'\]"
    with pytest.raises(FederatedConfigError, match=rf"name must be one of {known}, got 'svhn'"):
        get_source("svhn")
