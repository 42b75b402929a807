"""Checks of the IDX files (MNIST, Fashion-MNIST, EMNIST) before torchvision reads them.

torchvision's reader ends a malformed file with a bare ``assert`` or a shape error from ``torch.frombuffer``, and
reads labels without looking at them. These checks read only the headers and the label bytes, and raise a
:class:`~lightning_fl.exceptions.DataFileError` naming the file, the record and what is wrong.

An IDX file is a big-endian magic number ``0x0000 TT DD`` (``TT = 0x08``: unsigned bytes; ``DD``: number of
dimensions), one big-endian uint32 per dimension, then the values.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from lightning_fl.exceptions import DataFileError

UBYTE = 0x08
IMAGE_SHAPE = (28, 28)


def idx_length(path: Path, ndim: int, item_shape: tuple[int, ...] | None = None) -> int:
    """The number of records of an unsigned-byte IDX file of ``ndim`` dimensions, after checking its header and size.

    Args:
        path: The file.
        ndim: Dimensions the file must have (1 for labels, 3 for images).
        item_shape: Shape each record must have (``(28, 28)`` for images), or ``None``.

    Returns:
        The first dimension: how many records the file holds.

    Raises:
        DataFileError: If the magic number, the record shape or the file size is wrong.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = path.write_bytes(struct.pack(">II", 0x0801, 3) + bytes([1, 2]))
        >>> idx_length(path, 1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.DataFileError: .../labels-idx1-ubyte: the header says 3 records of 1 byte(s) \
(11 bytes with the 8-byte header), but the file has 10 bytes: truncated, or not this file
    """
    size = path.stat().st_size
    header_bytes = 4 + 4 * ndim
    with path.open("rb") as f:
        header = f.read(header_bytes)
    if len(header) < 4 or header[:2] != b"\0\0" or header[2] != UBYTE or header[3] != ndim:
        raise DataFileError(
            f"{path} is not an IDX file of unsigned bytes with {ndim} dimension(s): it starts with "
            f"{header[:4].hex() or 'nothing'}, expected magic number 000008{ndim:02x}"
        )
    if len(header) < header_bytes:
        raise DataFileError(f"{path}: the header is cut short, {size} bytes where {header_bytes} are needed")
    dims = struct.unpack(f">{ndim}I", header[4:])
    if item_shape is not None and tuple(dims[1:]) != item_shape:
        raise DataFileError(f"{path}: records must be {item_shape} bytes, the header says {tuple(dims[1:])}")
    record = math.prod(dims[1:])
    expected = header_bytes + dims[0] * record
    if size != expected:
        raise DataFileError(
            f"{path}: the header says {dims[0]} records of {record} byte(s) ({expected} bytes with the "
            f"{header_bytes}-byte header), but the file has {size} bytes: truncated, or not this file"
        )
    return int(dims[0])


def check_idx_pair(images: Path, labels: Path, num_classes: int) -> None:
    """Check an images file and its labels file: headers, sizes, equal counts, labels in ``[0, num_classes)``.

    Args:
        images: The ``*-images-idx3-ubyte`` file (28 x 28 images).
        labels: The ``*-labels-idx1-ubyte`` file.
        num_classes: Labels must be below this.

    Raises:
        DataFileError: Naming the file, the record and what is wrong.
    """
    num_images = idx_length(images, 3, IMAGE_SHAPE)
    num_labels = idx_length(labels, 1)
    if num_images != num_labels:
        raise DataFileError(f"{images} holds {num_images} images but {labels} holds {num_labels} labels")
    values = np.fromfile(labels, dtype=np.uint8, offset=8)
    bad = np.flatnonzero(values >= num_classes)
    if bad.size:
        first = int(bad[0])
        raise DataFileError(
            f"{labels}: record {first} has label {int(values[first])}, outside [0, {num_classes - 1}] "
            f"({num_classes} classes); {bad.size} labels are out of range"
        )
