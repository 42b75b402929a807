"""The codec seam: a tensor goes in, a :class:`Payload` of real bytes comes out, and back.

A codec is what travels on the wire between the server and a client. ``encode`` runs on the sender and
``decode`` on the receiver; the only thing they share is the payload. The size that lightning-fl reports for
a round is the sum of ``payload.nbytes``: the bytes the encoder actually produced, header included.
"""

from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from lightning_fl.exceptions import PayloadError

# dtype <-> one-byte code used in headers
_DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 0,
    torch.float16: 1,
    torch.bfloat16: 2,
    torch.float64: 3,
    torch.int64: 4,
    torch.int32: 5,
    torch.uint8: 6,
    torch.int8: 7,
    torch.bool: 8,
    torch.int16: 9,
}
_CODE_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}
_MAX_NDIM = 8
_MAX_NUMEL = 1 << 40


@dataclass(frozen=True)
class Payload:
    """The encoded form of one tensor.

    Attributes:
        codec: Name of the codec that produced it; ``decode`` refuses a payload from another codec.
        header: Packed metadata the decoder needs (shape, dtype, seeds, scales). Counted in ``nbytes``.
        body: The encoded data as a 1-D ``torch.uint8`` tensor on the sender's device.
    """

    codec: str
    header: bytes
    body: torch.Tensor

    @property
    def nbytes(self) -> int:
        """Bytes on the wire: header plus body."""
        return len(self.header) + int(self.body.numel())

    def to_bytes(self) -> bytes:
        """Serialise to a self-delimiting ``bytes`` object (header length, header, body)."""
        return struct.pack("<I", len(self.header)) + self.header + self.body.cpu().numpy().tobytes()

    @classmethod
    def from_bytes(cls, codec: str, data: bytes, device: torch.device | str = "cpu") -> Payload:
        """Inverse of :meth:`to_bytes`.

        Raises:
            PayloadError: If ``data`` is shorter than the header length it announces.
        """
        if len(data) < 4:
            raise PayloadError(f"payload must hold at least 4 bytes, got {len(data)}")
        (hlen,) = struct.unpack_from("<I", data)
        if 4 + hlen > len(data):
            raise PayloadError(f"payload announces a {hlen}-byte header but holds only {len(data) - 4} bytes")
        raw = memoryview(data)[4 + hlen :]  # one copy of the body (into the bytearray), not two
        # torch.frombuffer refuses an empty buffer; a zero-element tensor (or a codec that sends only a header) has one
        body = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
        body = body.to(device)
        return cls(codec=codec, header=bytes(data[4 : 4 + hlen]), body=body)


def pack_tensor_meta(shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> bytes:
    """Pack a tensor's dtype and shape: 1 byte dtype, 1 byte ndim, 4 bytes per dimension.

    Example:
        >>> meta = pack_tensor_meta((3, 4), torch.float32)
        >>> len(meta), unpack_tensor_meta(meta, 0)[:2]
        (10, ((3, 4), torch.float32))
    """
    if dtype not in _DTYPE_CODES:
        raise PayloadError(f"dtype must be one of {sorted(str(d) for d in _DTYPE_CODES)}, got {dtype}")
    if len(shape) > _MAX_NDIM:
        raise PayloadError(f"tensors may have at most {_MAX_NDIM} dimensions, got {len(shape)}")
    return struct.pack(f"<BB{len(shape)}I", _DTYPE_CODES[dtype], len(shape), *shape)


def unpack_tensor_meta(header: bytes, offset: int) -> tuple[tuple[int, ...], torch.dtype, int]:
    """Read what :func:`pack_tensor_meta` wrote at ``offset``.

    Returns:
        ``(shape, dtype, offset_after)``.

    Raises:
        PayloadError: If the header is truncated or holds an unknown dtype or an absurd shape.
    """
    if len(header) < offset + 2:
        raise PayloadError(f"header truncated: needs {offset + 2} bytes for dtype and ndim, has {len(header)}")
    code, ndim = struct.unpack_from("<BB", header, offset)
    if code not in _CODE_DTYPES:
        raise PayloadError(f"header holds unknown dtype code {code}")
    if ndim > _MAX_NDIM:
        raise PayloadError(f"header announces {ndim} dimensions, at most {_MAX_NDIM} are allowed")
    end = offset + 2 + 4 * ndim
    if len(header) < end:
        raise PayloadError(f"header truncated: needs {end} bytes for a {ndim}-d shape, has {len(header)}")
    shape = struct.unpack_from(f"<{ndim}I", header, offset + 2)
    if math.prod(shape) > _MAX_NUMEL:
        raise PayloadError(f"header announces {math.prod(shape)} elements, more than the limit {_MAX_NUMEL}")
    return tuple(shape), _CODE_DTYPES[code], end


def check_tensor_meta(
    codec: str, header: bytes, offset: int, shape: tuple[int, ...], dtype: torch.dtype
) -> int:
    """Read the tensor meta at ``offset`` and refuse it unless it announces exactly ``shape`` and ``dtype``.

    The first step of every codec's :meth:`Codec.check_payload_for`: once the header's shape is the expected one,
    every size the codec derives from it is bounded by the receiver's own tensor, never by the sender's claim.

    Args:
        codec: The codec's name, for the error message.
        header: The payload's header.
        offset: Where the meta starts.
        shape: The shape the receiver expects.
        dtype: The dtype the receiver expects.

    Returns:
        The offset just after the meta.

    Raises:
        PayloadError: If the meta is truncated or malformed, or names another shape or dtype.

    Example:
        >>> check_tensor_meta("Identity", pack_tensor_meta((3, 4), torch.float32), 0, (3, 4), torch.float32)
        10
    """
    found_shape, found_dtype, end = unpack_tensor_meta(header, offset)
    if found_shape != tuple(shape) or found_dtype != dtype:
        raise PayloadError(
            f"{codec} payload announces a tensor of shape {found_shape} and dtype {found_dtype}, expected shape "
            f"{tuple(shape)} and dtype {dtype}"
        )
    return end


def check_body(codec: str, payload: Payload) -> None:
    """Refuse a body that is not the 1-D ``uint8`` tensor every codec writes."""
    body = payload.body
    if body.dtype != torch.uint8 or body.dim() != 1:
        raise PayloadError(
            f"{codec} payload body must be a 1-D uint8 tensor, got {body.dtype} of shape {tuple(body.shape)}"
        )


class Codec(ABC):
    """Encodes a tensor into a :class:`Payload` and decodes it back.

    Subclasses declare ``lossless`` (decode(encode(x)) == x: bit for bit for raw bytes, up to float32 rounding
    for orthogonal transforms such as the Hadamard rotation) and ``unbiased`` (E[decode(encode(x))] = x over the
    seed). ``seed`` drives every random choice of the encoder; a payload carries whatever seed the
    decoder needs. ``key`` names the stream (for example ``"client7/fc1.weight"``) for codecs that keep
    per-stream state such as error-feedback residuals; stateless codecs ignore it.
    """

    # Class-level defaults; a configurable codec (a Chain, Kashin(lossless=False)) sets them per instance.
    lossless: bool = False
    unbiased: bool = False
    #: Keeps per-stream state between calls (error-feedback residuals), which must follow its client.
    stateful: bool = False
    #: Draws on ``seed``; a codec that does not (raw bytes, casts) lets callers skip deriving one.
    uses_seed: bool = True
    #: Payload length depends only on the tensor's shape and dtype (never on its values, seed or state).
    fixed_size: bool = False

    @property
    def name(self) -> str:
        """The tag written into payloads; the class name unless a subclass says otherwise."""
        return type(self).__name__

    @abstractmethod
    def encode(self, x: torch.Tensor, seed: int, key: str | None = None) -> Payload:
        """Encode ``x`` with randomness drawn from ``seed`` (abstract: every codec defines its own format)."""

    @abstractmethod
    def decode(self, payload: Payload) -> torch.Tensor:
        """Rebuild a tensor of the original shape, dtype and device from ``payload`` (abstract)."""

    def check_payload(self, payload: Payload) -> None:
        """Refuse a payload produced by another codec."""
        if payload.codec != self.name:
            raise PayloadError(f"{self.name} cannot decode a payload produced by {payload.codec!r}")

    def check_payload_for(self, payload: Payload, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """Refuse, before decoding, a payload that cannot decode to a tensor of ``shape`` and ``dtype`` (an
        untrusted payload from a network). The base class checks only the codec tag; codecs refine it so that a
        header claiming another shape, or a body of the wrong length, is refused without allocating.

        Raises:
            PayloadError: If the payload cannot be a valid encoding of such a tensor.
        """
        self.check_payload(payload)

    def state_dict(self) -> dict[str, Any]:
        """Per-stream state that must survive a checkpoint (empty for stateless codecs)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state_dict:
            raise PayloadError(f"{self.name} is stateless but was given state with keys {sorted(state_dict)}")

    def forget(self, key_prefix: str) -> None:  # noqa: B027 - optional hook, stateless codecs keep nothing
        """Drop per-stream state whose key starts with ``key_prefix`` (a no-op for stateless codecs)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(Codec):
    """Sends the tensor's raw bytes unchanged (lossless).

    The body is a zero-copy ``uint8`` view of the contiguous tensor, so the identity path costs no copy
    when the tensor is already contiguous.

    Example:
        >>> codec = Identity()
        >>> x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
        >>> p = codec.encode(x, seed=0)
        >>> p.body.numel(), torch.equal(codec.decode(p), x)
        (24, True)
    """

    lossless = True
    unbiased = True
    uses_seed = False
    fixed_size = True

    def encode(self, x: torch.Tensor, seed: int, key: str | None = None) -> Payload:
        flat = x.detach().contiguous().reshape(-1)
        return Payload(self.name, pack_tensor_meta(x.shape, x.dtype), flat.view(torch.uint8))

    def decode(self, payload: Payload) -> torch.Tensor:
        self.check_payload(payload)
        shape, dtype, end = unpack_tensor_meta(payload.header, 0)
        self._check_sizes(payload, shape, dtype, end)
        return payload.body.view(dtype).reshape(shape)

    def check_payload_for(self, payload: Payload, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """Refuse a payload whose meta is not ``shape`` and ``dtype`` or whose body is not exactly their raw bytes."""
        self.check_payload(payload)
        end = check_tensor_meta(self.name, payload.header, 0, shape, dtype)
        check_body(self.name, payload)
        self._check_sizes(payload, tuple(shape), dtype, end)

    def _check_sizes(self, payload: Payload, shape: tuple[int, ...], dtype: torch.dtype, meta_end: int) -> None:
        if meta_end != len(payload.header):
            raise PayloadError(f"{self.name} header should hold {meta_end} bytes, got {len(payload.header)}")
        itemsize = torch.empty((), dtype=dtype).element_size()
        expected = math.prod(shape) * itemsize
        if payload.body.numel() != expected:
            raise PayloadError(
                f"{self.name} payload body must hold {expected} bytes for shape {shape} {dtype}, "
                f"got {payload.body.numel()}"
            )
