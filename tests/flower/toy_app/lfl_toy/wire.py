"""How the toy app puts one float32 array on the wire: raw bytes in an ``Array`` with its own type tag."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

RAW_STYPE = "lfl.raw-float32"


def encode(values: np.ndarray) -> Array:
    """Wrap a 1-D float32 array as raw little-endian bytes tagged ``lfl.raw-float32`` (not Flower's numpy type)."""
    flat = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    return Array(dtype="float32", shape=(int(flat.size),), stype=RAW_STYPE, data=flat.tobytes())


def decode(array: Array, size: int) -> np.ndarray:
    """Turn a received ``Array`` back into ``size`` float32 values, refusing anything else.

    Raises:
        ValueError: if the type tag, the shape or the byte length is not the one ``size`` float32 values imply.
    """
    if array.stype != RAW_STYPE:
        raise ValueError(f"array stype must be {RAW_STYPE!r}, got {array.stype!r}")
    if tuple(array.shape) != (size,) or len(array.data) != 4 * size:
        expected = f"({size},) float32 in {4 * size} bytes"
        raise ValueError(f"array must hold {expected}, got {array.shape} in {len(array.data)} bytes")
    return np.frombuffer(array.data, dtype="<f4").copy()


def content_bytes(content: RecordDict) -> int:
    """Bytes of a message's content as Flower ships it: every object of its tree, deflated, counted once."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(content).values())
