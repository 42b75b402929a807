"""Tensors on a Flower wire: each one a codec's payload bytes in a Flower ``Array``, never a dense float array.

A payload travels as ``Array(dtype="uint8", shape=(len(data),), stype="lightning_fl.payload/<codec>", data=data)``
where ``data`` is :meth:`~lightning_fl.codecs.base.Payload.to_bytes` (a 4-byte header length, the codec's header,
its body). Encoding follows :meth:`lightning_fl.federation.link.Link.send` exactly: the payload seed of a tensor is
``derive_seed(seed, direction, round_idx, client_id, name)`` and a stateful codec keys its state by
``"{client_id}/{name}"``, so a Flower run draws the same numbers as ``lightning-fl fit``. Every payload received is
decoded with :func:`~lightning_fl.codecs.untrusted.decode_untrusted` against the tensor it must become.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.common.serde import recorddict_to_proto

from lightning_fl.codecs.base import Codec
from lightning_fl.codecs.error_feedback import ErrorFeedback
from lightning_fl.codecs.untrusted import decode_untrusted
from lightning_fl.exceptions import PayloadError
from lightning_fl.seeding import derive_seed

__all__ = ["STYPE_PREFIX", "TensorSlot", "WireTensors", "content_bytes", "decode_record", "encode_record",
           "receiver_codec"]

#: The ``stype`` of every payload ``Array``, followed by the codec's name.
STYPE_PREFIX = "lightning_fl.payload/"
#: Bytes :meth:`Payload.to_bytes` adds in front of the codec's payload (the header length).
LENGTH_PREFIX = 4
#: Slack over the probe size for codec headers whose length varies (seeds, ranges).
HEADER_SLACK = 64


def receiver_codec(codec: Codec) -> Codec:
    """The codec a receiver decodes with: error feedback only changes what the sender encodes, so the receiver
    decodes the wrapped codec's payload with the wrapped codec alone (and keeps no sender state).

    Example:
        >>> from lightning_fl.codecs import SignCompressor
        >>> receiver_codec(ErrorFeedback(SignCompressor())).name
        'SignCompressor()'
    """
    return codec.codec if isinstance(codec, ErrorFeedback) else codec


@dataclass(frozen=True)
class TensorSlot:
    """One tensor on the wire: its name, what it must decode to, the codec, and the most bytes it may take."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    codec: Codec
    max_bytes: int


def payload_budget(codec: Codec, shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """The most bytes a payload of ``codec`` for a tensor of ``shape`` and ``dtype`` may hold (length prefix
    included): the larger of the tensor's dense bytes plus a 32-bit index per entry (a sparse codec that keeps every
    entry, as MagnitudePrune does on ties) and a probe encoding of a random tensor of that shape (codecs that pad,
    such as the Hadamard rotation, may exceed the dense size), plus slack for variable headers. It stays within a
    small multiple of the tensor's dense size, which is what the server may allocate for it.

    Example:
        >>> from lightning_fl.codecs import Identity
        >>> payload_budget(Identity(), (10,), torch.float32) >= 40
        True
    """
    numel = math.prod(shape)
    # a sparse codec's worst honest payload keeps every entry (ties in MagnitudePrune): values plus 32-bit indices
    dense = numel * torch.empty((), dtype=dtype).element_size() + 4 * numel
    probe_input = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    probe = receiver_codec(codec).encode(probe_input, 0, key="probe/probe").nbytes
    return max(dense, probe) + HEADER_SLACK + LENGTH_PREFIX


class WireTensors:
    """The named tensors one direction of the exchange carries, each with its codec and byte budget.

    Args:
        names: Tensor names, in the order they are encoded.
        tensors: Example tensors (shapes and dtypes; values are not kept).
        codecs: The codec of each tensor (a :class:`~lightning_fl.federation.link.Link`'s choice per tensor).
        direction: ``"downlink"`` or ``"uplink"`` (part of every payload seed).
    """

    def __init__(self, names: Sequence[str], tensors: Sequence[torch.Tensor], codecs: Sequence[Codec],
                 direction: str) -> None:
        self.direction = direction
        self.slots = [
            TensorSlot(name, tuple(t.shape), t.dtype, codec, payload_budget(codec, tuple(t.shape), t.dtype))
            for name, t, codec in zip(names, tensors, codecs, strict=True)
        ]

    @property
    def max_bytes(self) -> int:
        """The most bytes all payloads together may hold."""
        return sum(slot.max_bytes for slot in self.slots)


def encode_record(wire: WireTensors, tensors: Sequence[torch.Tensor], *, seed: int, round_idx: int,
                  client_id: int) -> tuple[ArrayRecord, int]:
    """Encode ``tensors`` (aligned with ``wire.slots``) as :meth:`Link.send` does, each into a payload ``Array``.

    Returns:
        ``(record, payload bytes)``: the payload bytes are the codecs' (headers included, length prefixes not),
        the number ``lightning-fl fit`` reports for the same tensors.

    Example:
        >>> from lightning_fl.codecs import StochasticQuantizer
        >>> x = torch.linspace(-1, 1, 64)
        >>> wire = WireTensors(["w"], [x], [StochasticQuantizer(bits=4)], "uplink")
        >>> record, nbytes = encode_record(wire, [x], seed=0, round_idx=0, client_id=3)
        >>> record["w"].stype, record["w"].dtype, nbytes, record_bytes(record) - nbytes
        ('lightning_fl.payload/StochasticQuantizer(bits=4)', 'uint8', 46, 4)
        >>> (decoded,), _ = decode_record(wire, record)
        >>> decoded.shape, bool((decoded - x).abs().max() <= 2 / 15)
        (torch.Size([64]), True)
    """
    arrays: dict[str, Array] = {}
    total = 0
    for slot, tensor in zip(wire.slots, tensors, strict=True):
        codec = slot.codec
        tensor_seed = derive_seed(seed, wire.direction, round_idx, client_id, slot.name) if codec.uses_seed else 0
        key = f"{client_id}/{slot.name}" if codec.stateful else None
        payload = codec.encode(tensor, tensor_seed, key=key)
        total += payload.nbytes
        data = payload.to_bytes()
        arrays[slot.name] = Array(dtype="uint8", shape=(len(data),), stype=STYPE_PREFIX + payload.codec, data=data)
    return ArrayRecord(arrays), total


def decode_record(wire: WireTensors, record: object, device: torch.device | str = "cpu"
                  ) -> tuple[list[torch.Tensor], int]:
    """Decode every payload of ``record`` into the tensor its slot says, refusing anything else.

    Returns:
        ``(tensors, payload bytes)`` aligned with ``wire.slots``.

    Raises:
        PayloadError: If the record is not an ``ArrayRecord`` of exactly the slots' names, or a payload is not a
            uint8 payload ``Array`` of the expected codec that fits its budget and decodes to the expected shape and
            dtype.
    """
    if not isinstance(record, ArrayRecord):
        raise PayloadError(f"the payloads must come as an ArrayRecord, got {type(record).__name__}")
    expected = [slot.name for slot in wire.slots]
    if sorted(record.keys()) != sorted(expected):
        missing, extra = sorted(set(expected) - set(record)), sorted(set(record) - set(expected))
        raise PayloadError(f"the payloads must name exactly the {len(expected)} tensors of the model; missing "
                           f"{missing[:5]}, unexpected {extra[:5]}")
    out: list[torch.Tensor] = []
    total = 0
    for slot in wire.slots:
        array = record[slot.name]
        codec = receiver_codec(slot.codec)
        if array.stype != STYPE_PREFIX + codec.name or array.dtype != "uint8":
            raise PayloadError(f"tensor {slot.name!r} must travel as a uint8 Array of stype "
                               f"{STYPE_PREFIX + codec.name!r}, got dtype {array.dtype!r} and stype {array.stype!r}")
        data = array.data
        tensor = decode_untrusted(codec, data, slot.shape, slot.dtype, slot.max_bytes, device)
        total += len(data) - LENGTH_PREFIX
        out.append(tensor)
    return out, total


def record_bytes(record: ArrayRecord) -> int:
    """Bytes of the ``Array`` data in ``record``: what the message carries, before Flower's own framing."""
    return sum(len(array.data) for array in record.values())


def content_bytes(content: RecordDict) -> int:
    """Serialized size of a message's content, as Flower puts it on the wire (its protobuf, before gRPC/TLS)."""
    return int(recorddict_to_proto(content).ByteSize())
