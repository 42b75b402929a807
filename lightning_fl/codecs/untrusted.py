"""Decoding a payload that arrived over a network: checked against the tensor it must become before it is trusted.

A payload from a real client is untrusted. :func:`decode_untrusted` refuses it (with :class:`PayloadError`) unless
its bytes fit the budget, it was produced by the expected codec, and the decoded tensor has exactly the shape and
dtype the receiver expects. Every codec of :mod:`lightning_fl.codecs` checks a payload's header against the expected
shape and dtype *before* decoding, in :meth:`Codec.check_payload_for` (so that a header claiming a huge shape
allocates nothing, and every size the decoder uses comes from the receiver's tensor); a codec of your own checks only
its tag until it overrides that method.
"""

from __future__ import annotations

import torch

from lightning_fl.codecs.base import Codec, Payload
from lightning_fl.exceptions import PayloadError

__all__ = ["decode_untrusted"]


def decode_untrusted(
    codec: Codec,
    data: bytes,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    max_bytes: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Decode ``data`` (what :meth:`Payload.to_bytes` wrote) into a tensor of ``shape`` and ``dtype``, or refuse it.

    Args:
        codec: The codec the sender was configured with.
        data: The serialized payload as received.
        shape: The shape the decoded tensor must have.
        dtype: The dtype the decoded tensor must have.
        max_bytes: The most bytes this payload may hold (refused before anything is parsed when larger).
        device: Where to decode.

    Raises:
        PayloadError: If the payload is larger than ``max_bytes``, malformed, from another codec, or decodes to
            another shape or dtype.

    Example:
        >>> from lightning_fl.codecs import Identity
        >>> x = torch.arange(4.0)
        >>> decode_untrusted(Identity(), Identity().encode(x, 0).to_bytes(), (4,), torch.float32, 1024).tolist()
        [0.0, 1.0, 2.0, 3.0]
    """
    if len(data) > max_bytes:
        raise PayloadError(f"payload holds {len(data)} bytes, more than the budget of {max_bytes} for a tensor of "
                           f"shape {tuple(shape)} and dtype {dtype}")
    payload = Payload.from_bytes(codec.name, data, device=device)
    codec.check_payload_for(payload, tuple(shape), dtype)
    try:
        tensor = codec.decode(payload)
    except PayloadError:
        raise
    except (ValueError, RuntimeError, IndexError, OverflowError, TypeError) as err:  # torch's errors on bad bytes
        raise PayloadError(f"{codec.name} payload could not be decoded: {err}") from err
    if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
        raise PayloadError(f"{codec.name} payload decodes to a tensor of shape {tuple(tensor.shape)} and dtype "
                           f"{tensor.dtype}, expected shape {tuple(shape)} and dtype {dtype}")
    return tensor
