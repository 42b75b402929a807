"""Tests of the partition report and plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightning_fl.datamodules.partitioners import DirichletPartitioner
from lightning_fl.datamodules.report import PartitionReport, partition_report, plot_partition
from lightning_fl.exceptions import FederatedConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = np.array([0, 0, 1, 2, 2, 2, 1, 0])
PARTS = [np.array([0, 1, 2]), np.array([3, 4, 5]), np.array([6, 7])]


def test_report_against_hand_example() -> None:
    report = partition_report(PARTS, LABELS, num_classes=4)
    assert isinstance(report, PartitionReport)
    np.testing.assert_array_equal(report.sizes, [3, 3, 2])
    np.testing.assert_array_equal(report.label_histograms, [[2, 1, 0, 0], [0, 0, 3, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(report.labels_per_client, [2, 1, 2])
    assert (report.num_clients, report.num_classes) == (3, 4)
    assert report.summary() == (
        "3 clients, 8 samples, 4 classes; client size min 2 / median 3 / max 3; mean 1.67 distinct labels per client"
    )


def test_report_infers_num_classes_and_is_frozen() -> None:
    report = partition_report(PARTS, LABELS)
    assert report.label_histograms.shape == (3, 3)
    with pytest.raises(AttributeError):
        report.sizes = np.zeros(3)  # type: ignore[misc]


def test_report_rejects_bad_inputs() -> None:
    with pytest.raises(FederatedConfigError, match=r"num_classes must be an integer >= max\(labels\) \+ 1 = 3, got 2"):
        partition_report(PARTS, LABELS, num_classes=2)
    with pytest.raises(FederatedConfigError, match=r"parts\[1\] must hold indices in \[0, 8\), got values in \[3, 9\]"):
        partition_report([np.array([0]), np.array([3, 9])], LABELS)
    with pytest.raises(FederatedConfigError, match=r"labels must be >= 0, got -1"):
        partition_report(PARTS, np.array([-1, 0, 1]))
    with pytest.raises(
        FederatedConfigError, match=r"labels must be a 1-D array of integer class labels, got dtype float"
    ):
        partition_report(PARTS, LABELS.astype(float))


def test_plot_writes_png(tmp_path: Path) -> None:
    out = plot_partition(PARTS, LABELS, tmp_path / "sub" / "partition.png")
    assert out == tmp_path / "sub" / "partition.png"
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plot_many_clients_and_classes(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 62, 3000)
    parts = DirichletPartitioner(num_clients=150, alpha=0.5, seed=0).partition(labels)
    out = plot_partition(parts, labels, str(tmp_path / "femnist.png"), num_classes=62, max_clients=100)
    assert out.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(FederatedConfigError, match=r"max_clients must be an integer >= 1, got 0"):
        plot_partition(parts, labels, tmp_path / "x.png", max_clients=0)
