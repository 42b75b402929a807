"""What a partition looks like: client sizes, per-client label histograms, and a stacked bar chart of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lightning_fl.checks import check_int
from lightning_fl.exceptions import FederatedConfigError

if TYPE_CHECKING:
    from matplotlib.collections import PolyCollection


@dataclass(frozen=True, eq=False)
class PartitionReport:
    """Client sizes and label histograms of a partition.

    Attributes:
        sizes: Number of samples of every client, shape (num_clients,).
        label_histograms: Sample count per client and class, shape (num_clients, num_classes).

    Example:
        >>> report = partition_report([np.array([0, 1]), np.array([2])], labels=np.array([0, 1, 1]))
        >>> report.sizes.tolist(), report.label_histograms.tolist()
        ([2, 1], [[1, 1], [0, 1]])
    """

    sizes: np.ndarray
    label_histograms: np.ndarray

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return int(self.label_histograms.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes (columns of :attr:`label_histograms`)."""
        return int(self.label_histograms.shape[1])

    @property
    def labels_per_client(self) -> np.ndarray:
        """Number of distinct labels held by every client, shape (num_clients,)."""
        return (self.label_histograms > 0).sum(axis=1)

    def summary(self) -> str:
        """One line with the number of clients and samples, min/median/max client size and labels per client.

        Returns:
            A human-readable summary.

        Example:
            >>> print(partition_report([np.array([0, 1]), np.array([2])], np.array([0, 1, 1])).summary())
            ... # doctest: +NORMALIZE_WHITESPACE
            2 clients, 3 samples, 2 classes; client size min 1 / median 1.5 / max 2;
            mean 1.50 distinct labels per client
        """
        if self.num_clients == 0:
            return f"0 clients, 0 samples, {self.num_classes} classes"
        smallest, median, largest = int(self.sizes.min()), float(np.median(self.sizes)), int(self.sizes.max())
        if self.num_classes == 0 and self.sizes.sum() > 0:
            return (
                f"{self.num_clients} clients, {int(self.sizes.sum())} samples, no class labels; "
                f"client size min {smallest} / median {median:g} / max {largest}"
            )
        return (
            f"{self.num_clients} clients, {int(self.sizes.sum())} samples, {self.num_classes} classes; "
            f"client size min {smallest} / median {median:g} / max {largest}; "
            f"mean {float(self.labels_per_client.mean()):.2f} distinct labels per client"
        )


def partition_report(
    parts: Sequence[np.ndarray], labels: np.ndarray | None, num_classes: int | None = None
) -> PartitionReport:
    """Count the samples and the labels of every client.

    Args:
        parts: One index array per client, as returned by :meth:`Partitioner.partition`.
        labels: Integer class label of every sample, values in ``[0, num_classes)``; ``None`` for data without
            class labels (language models): the report then holds the client sizes and no label columns.
        num_classes: Number of classes; defaults to ``max(labels) + 1``.

    Returns:
        The :class:`PartitionReport`.

    Raises:
        FederatedConfigError: If ``labels`` are not non-negative integers below ``num_classes`` or an index in
            ``parts`` is out of range.

    Example:
        >>> labels = np.array([0, 0, 1, 2, 2, 2])
        >>> report = partition_report([np.array([0, 1, 2]), np.array([3, 4, 5])], labels, num_classes=4)
        >>> report.label_histograms.tolist()
        [[2, 1, 0, 0], [0, 0, 3, 0]]
        >>> print(partition_report([np.array([0, 1, 2]), np.array([3])], labels=None).summary())
        2 clients, 4 samples, no class labels; client size min 1 / median 2 / max 3
    """
    if labels is None:
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        return PartitionReport(sizes=sizes, label_histograms=np.zeros((len(parts), 0), dtype=np.int64))
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise FederatedConfigError(
            f"labels must be a 1-D array of integer class labels, got dtype {labels.dtype} and shape {labels.shape}"
        )
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise FederatedConfigError(f"labels must be >= 0, got {int(labels.min())}")
    observed = int(labels.max()) + 1 if labels.size else 0
    if num_classes is not None and check_int("num_classes", num_classes) < observed:
        raise FederatedConfigError(
            f"num_classes must be an integer >= max(labels) + 1 = {observed}, got {num_classes!r}"
        )
    num_classes = observed if num_classes is None else int(num_classes)
    histograms = np.zeros((len(parts), num_classes), dtype=np.int64)
    for client_id, part in enumerate(parts):
        part = np.asarray(part, dtype=np.int64)
        if part.size and (part.min() < 0 or part.max() >= len(labels)):
            raise FederatedConfigError(
                f"parts[{client_id}] must hold indices in [0, {len(labels)}), got values in "
                f"[{int(part.min())}, {int(part.max())}]"
            )
        histograms[client_id] = np.bincount(labels[part], minlength=num_classes)
    return PartitionReport(sizes=histograms.sum(axis=1), label_histograms=histograms)


def _class_colours(num_classes: int) -> list[tuple[float, float, float, float]]:
    """One colour per class: tab10/tab20 when they suffice, evenly spaced samples of a wide colormap otherwise."""
    from matplotlib import colormaps

    if num_classes <= 10:
        return [colormaps["tab10"](i) for i in range(num_classes)]
    if num_classes <= 20:
        return [colormaps["tab20"](i) for i in range(num_classes)]
    cmap = colormaps["nipy_spectral"]
    return [cmap(x) for x in np.linspace(0.05, 0.95, num_classes)]


def _stacked_bars(counts: np.ndarray, colours: np.ndarray) -> PolyCollection:
    """Horizontal stacked bars as one collection: a rectangle per non-empty (client, class) count, row = client.

    Far faster than ``Axes.barh`` per class, which adds one patch per client and class, empty ones included.
    """
    from matplotlib.collections import PolyCollection

    client, cls = np.nonzero(counts)
    x0 = (np.cumsum(counts, axis=1) - counts)[client, cls].astype(float)
    x1 = x0 + counts[client, cls]
    y0, y1 = client - 0.425, client + 0.425
    boxes = np.stack([x0, y0, x1, y0, x1, y1, x0, y1], axis=1).reshape(-1, 4, 2)
    return PolyCollection(list(boxes), facecolors=colours[cls], linewidths=0)


def plot_partition(
    parts: Sequence[np.ndarray],
    labels: np.ndarray | None,
    path: str | Path,
    num_classes: int | None = None,
    max_clients: int = 100,
) -> Path:
    """Save a stacked horizontal bar chart of the label counts of every client as a PNG.

    One bar per client (the first ``max_clients`` clients), one colour per class, with a legend, axis labels and
    a title that summarises the partition. Uses matplotlib's object API with the Agg canvas, so it neither needs
    a display nor touches ``pyplot``'s global state.

    Args:
        parts: One index array per client, as returned by :meth:`Partitioner.partition`.
        labels: Integer class label of every sample.
        path: Where to write the PNG; missing parent directories are created.
        num_classes: Number of classes; defaults to ``max(labels) + 1``.
        max_clients: Most clients to draw, at least 1.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FederatedConfigError: If ``max_clients`` < 1 or the inputs are rejected by :func:`partition_report`.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "partition.png"
        >>> plot_partition([np.array([0, 1]), np.array([2])], np.array([0, 1, 1]), out).read_bytes()[:4]
        b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    check_int("max_clients", max_clients, low=1)
    if labels is None:
        raise FederatedConfigError("plot_partition draws label counts per client and needs labels, got labels=None")
    report = partition_report(parts, labels, num_classes)
    shown = report.label_histograms[: int(max_clients)]
    num_shown, num_cls = shown.shape

    fig = Figure(figsize=(10, min(2.0 + 0.18 * num_shown, 24.0)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = np.array(_class_colours(num_cls)).reshape(num_cls, 4)
    ax.add_collection(_stacked_bars(shown, colours))
    ax.set_xlim(0, max(1, int(shown.sum(axis=1).max(initial=0))) * 1.02)
    ax.set_ylim(-0.5, max(num_shown, 1) - 0.5)
    ax.set_yticks(np.arange(num_shown)[:: max(1, num_shown // 25)])
    ax.invert_yaxis()
    ax.set_xlabel("samples")
    ax.set_ylabel("client")
    clients = (
        f"{report.num_clients} clients"
        if num_shown == report.num_clients
        else (f"first {num_shown} of {report.num_clients} clients")
    )
    ax.set_title(f"Label counts per client ({clients}, {int(report.sizes.sum())} samples)")
    if num_cls:
        ax.legend(
            handles=[Patch(facecolor=colours[c], label=str(c)) for c in range(num_cls)],
            title="class",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize="small",
            ncols=max(1, -(-num_cls // 25)),
        )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path
