"""Elementary codec stages and the driver that runs a sequence of them.

Modelled on TensorFlow Model Optimization's encoding stages. A :class:`TransformStage` maps a 1-D float tensor
to another 1-D tensor plus a small fixed-size header (and, for sparse stages, extra bytes such as indices); its
``inverse`` undoes it. A :class:`TerminalStage` turns the last tensor into the payload body (raw floats by
default, or packed quantization codes). :func:`encode_stages` runs transforms forward and the terminal last;
:func:`decode_stages` reads every header first, checks that the body has exactly the size the headers imply,
and only then decodes in reverse; :func:`check_stages_for` does the same reading for an untrusted payload, against the
shape and dtype the receiver expects. Every stage is itself a :class:`~lightning_fl.codecs.base.Codec`: a stage
alone is a chain of one.

Payload layout (the same for a stage alone and for a :class:`~lightning_fl.codecs.chain.Chain`)::

    header = meta | seed | stage headers | terminal header
             meta:   1 byte dtype, 1 byte ndim, 4 bytes per dim (pack_tensor_meta)
             seed:   8 bytes uint64, only when a stage's decoder needs randomness (Hadamard signs, masks)
             stages: each exactly ``stage.header_size`` bytes, in chain order
    body   = terminal body | extra bytes of stage 0 | extra bytes of stage 1 | ...

Stage ``i`` draws its randomness from ``derive_seed(seed, "stage", i)`` on the tensor's device.
"""

from __future__ import annotations

import math
import struct
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from lightning_fl.codecs.base import (
    Codec,
    Payload,
    check_body,
    check_tensor_meta,
    pack_tensor_meta,
    unpack_tensor_meta,
)
from lightning_fl.exceptions import FederatedConfigError, PayloadError
from lightning_fl.seeding import derive_seed

WORK_DTYPE = torch.float32
_SEED = struct.Struct("<Q")


@dataclass(frozen=True)
class StageOutput:
    """What a transform stage produces.

    Attributes:
        tensor: The transformed 1-D tensor, handed to the next stage.
        header: Exactly ``stage.header_size`` bytes the inverse needs (counts, scales).
        extra: Bytes that travel in the body besides the terminal's (for example top-k indices), or None.
    """

    tensor: torch.Tensor
    header: bytes = b""
    extra: torch.Tensor | None = None


@dataclass(frozen=True)
class StageLayout:
    """What a decoder learns from a stage's header before touching the body.

    Attributes:
        numel: Number of elements of the stage's output.
        dtype: Dtype of the stage's output.
        extra_nbytes: Size of the stage's extra bytes in the body.
    """

    numel: int
    dtype: torch.dtype = WORK_DTYPE
    extra_nbytes: int = 0


@dataclass(frozen=True)
class StageContext:
    """Everything an inverse needs besides the tensor it inverts.

    Attributes:
        numel: Number of elements of the stage's input, which the inverse must return.
        dtype: Dtype of the stage's input.
        header: The stage's header bytes.
        seed: The stage's seed (the same one ``forward`` received).
        extra: The stage's extra body bytes (1-D uint8), or None.
        writable: Whether the inverse may overwrite its input tensor in place.
    """

    numel: int
    dtype: torch.dtype
    header: bytes
    seed: int
    extra: torch.Tensor | None = None
    writable: bool = False


class Stage(Codec):
    """An elementary stage; usable alone as a :class:`Codec` (then it is a chain of one).

    Class attributes:
        header_size: Bytes of header the stage writes per tensor.
        needs_seed: Whether the decoder needs the seed (the payload then carries it, 8 bytes).
    """

    header_size: ClassVar[int] = 0
    needs_seed: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return repr(self)

    def _repr_args(self) -> dict[str, object]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._repr_args().items())
        return f"{type(self).__name__}({args})"

    def encode(self, x: torch.Tensor, seed: int, key: str | None = None) -> Payload:
        transforms, terminal = split_stages([self])
        return encode_stages(self.name, transforms, terminal, x, seed)

    def decode(self, payload: Payload) -> torch.Tensor:
        transforms, terminal = split_stages([self])
        return decode_stages(self.name, transforms, terminal, payload)

    def check_payload_for(self, payload: Payload, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        transforms, terminal = split_stages([self])
        check_stages_for(self.name, transforms, terminal, payload, shape, dtype)


class TransformStage(Stage):
    """A stage that maps a 1-D tensor to another 1-D tensor (rotation, subsampling, sparsification, cast)."""

    @abstractmethod
    def forward(self, x: torch.Tensor, seed: int) -> StageOutput:
        """Transform the 1-D tensor ``x`` (float32 unless an earlier stage cast it); must not modify ``x``."""

    @abstractmethod
    def layout(self, numel: int, dtype: torch.dtype, header: bytes) -> StageLayout:
        """Output size, dtype and extra bytes for an input of ``numel`` elements; raises PayloadError if the
        header cannot have come from :meth:`forward`."""

    @abstractmethod
    def inverse(self, y: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        """Map the output of :meth:`forward` back to a 1-D tensor of ``ctx.numel`` elements."""


class TerminalStage(Stage):
    """The last stage: serialises the final tensor into the payload body (raw floats, packed codes)."""

    @abstractmethod
    def serialize(self, x: torch.Tensor, seed: int) -> tuple[bytes, torch.Tensor]:
        """Return ``(header, body)``: ``header_size`` header bytes and a 1-D uint8 body."""

    @abstractmethod
    def body_nbytes(self, numel: int, dtype: torch.dtype, header: bytes) -> int:
        """Body size for ``numel`` elements of ``dtype``; raises PayloadError on an impossible header."""

    @abstractmethod
    def deserialize(self, body: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        """Rebuild the 1-D tensor of ``ctx.numel`` elements (float32 or ``ctx.dtype``) from ``body``."""


class RawSerializer(TerminalStage):
    """Writes the tensor's raw bytes in its current dtype (float32 unless a cast stage ran). Lossless.

    Example:
        >>> codec = RawSerializer()
        >>> x = torch.tensor([1.5, -2.0])
        >>> torch.equal(codec.decode(codec.encode(x, seed=0)), x)
        True
    """

    lossless = True
    unbiased = True

    def serialize(self, x: torch.Tensor, seed: int) -> tuple[bytes, torch.Tensor]:
        return b"", x.contiguous().view(torch.uint8)

    def body_nbytes(self, numel: int, dtype: torch.dtype, header: bytes) -> int:
        return numel * itemsize(dtype)

    def deserialize(self, body: torch.Tensor, ctx: StageContext) -> torch.Tensor:
        return view_bytes(body, ctx.dtype)


def itemsize(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


def view_bytes(data: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Reinterpret 1-D uint8 ``data`` as ``dtype`` (copying only when it is misaligned for ``dtype``)."""
    size = itemsize(dtype)
    if data.numel() % size:
        raise PayloadError(f"{data.numel()} bytes are not a whole number of {dtype} elements")
    if (data.storage_offset() % size) or not data.is_contiguous():
        data = data.clone()
    return data.view(dtype)


def split_stages(stages: Sequence[Stage]) -> tuple[list[TransformStage], TerminalStage]:
    """Check that only the last stage is terminal; append a :class:`RawSerializer` when none is.

    Raises:
        FederatedConfigError: If a terminal stage is not last, or an element is not a stage.
    """
    for i, stage in enumerate(stages):
        if not isinstance(stage, Stage):
            raise FederatedConfigError(f"stages must be codec stages, got {type(stage).__name__} at position {i}")
        if isinstance(stage, TerminalStage) and i != len(stages) - 1:
            raise FederatedConfigError(
                f"{stage!r} writes the payload body and must be the last stage, got it at position {i} of {len(stages)}"
            )
    if stages and isinstance(stages[-1], TerminalStage):
        return [s for s in stages[:-1] if isinstance(s, TransformStage)], stages[-1]
    return [s for s in stages if isinstance(s, TransformStage)], RawSerializer()


def stage_seed(seed: int, position: int) -> int:
    """The seed of the stage at ``position`` in a chain encoded with ``seed``."""
    return derive_seed(seed, "stage", position)


def _check_input(name: str, x: torch.Tensor, seed: int) -> None:
    if not x.is_floating_point():
        raise FederatedConfigError(
            f"{name} encodes floating tensors only, got {x.dtype}; send it with Identity (see TensorPolicy)"
        )
    if not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise FederatedConfigError(f"seed must be an integer in [0, 2**64), got {seed!r}")


def encode_stages(
    name: str, transforms: Sequence[TransformStage], terminal: TerminalStage, x: torch.Tensor, seed: int
) -> Payload:
    """Run ``transforms`` forward on ``x`` flattened to float32, then ``terminal``; see the module docstring."""
    _check_input(name, x, seed)
    headers = [pack_tensor_meta(x.shape, x.dtype)]
    if any(s.needs_seed for s in (*transforms, terminal)):
        headers.append(_SEED.pack(seed))
    work = x.detach().reshape(-1).to(WORK_DTYPE)
    extras = []
    for i, stage in enumerate(transforms):
        out = stage.forward(work, stage_seed(seed, i))
        headers.append(out.header)
        if out.extra is not None:
            extras.append(out.extra)
        work = out.tensor
    terminal_header, body = terminal.serialize(work, stage_seed(seed, len(transforms)))
    headers.append(terminal_header)
    if extras:
        body = torch.cat([body, *extras])
    return Payload(name, b"".join(headers), body)


def _take(header: bytes, offset: int, size: int, what: str) -> bytes:
    if offset + size > len(header):
        raise PayloadError(f"header truncated: {what} needs bytes {offset}..{offset + size}, header has {len(header)}")
    return header[offset : offset + size]


@dataclass(frozen=True)
class _StagePlan:
    """What every header of a stage payload says, validated against the body's length, before any decoding."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    contexts: list[StageContext]
    extra_sizes: list[int]
    terminal_ctx: StageContext
    terminal_nbytes: int


def _plan_stages(
    name: str,
    transforms: Sequence[TransformStage],
    terminal: TerminalStage,
    payload: Payload,
    expected: tuple[tuple[int, ...], torch.dtype] | None = None,
) -> _StagePlan:
    """Read every header and check that the body has exactly the size they imply (no tensor is allocated).

    With ``expected = (shape, dtype)`` the meta must announce exactly those, and is checked before any size is
    derived from it: each stage's layout (Hadamard's padded length, Kashin's frame, a sparsifier's or
    subsample's kept count) then follows from the receiver's shape, not from the sender's claim.
    """
    if payload.codec != name:
        raise PayloadError(f"{name} cannot decode a payload produced by {payload.codec!r}")
    check_body(name, payload)
    header = payload.header
    if expected is None:
        shape, dtype, offset = unpack_tensor_meta(header, 0)
    else:
        shape, dtype = tuple(expected[0]), expected[1]
        offset = check_tensor_meta(name, header, 0, shape, dtype)
    seed = 0
    if any(s.needs_seed for s in (*transforms, terminal)):
        (seed,) = _SEED.unpack(_take(header, offset, _SEED.size, "the seed"))
        offset += _SEED.size
    numel, work_dtype = math.prod(shape), WORK_DTYPE
    contexts, extra_sizes = [], []
    for i, stage in enumerate(transforms):
        stage_header = _take(header, offset, stage.header_size, repr(stage))
        offset += stage.header_size
        layout = stage.layout(numel, work_dtype, stage_header)
        contexts.append(StageContext(numel, work_dtype, stage_header, stage_seed(seed, i)))
        extra_sizes.append(layout.extra_nbytes)
        numel, work_dtype = layout.numel, layout.dtype
    terminal_header = _take(header, offset, terminal.header_size, repr(terminal))
    offset += terminal.header_size
    if offset != len(header):
        raise PayloadError(f"header of {name} should hold {offset} bytes, got {len(header)}")
    terminal_nbytes = terminal.body_nbytes(numel, work_dtype, terminal_header)
    if payload.body.numel() != terminal_nbytes + sum(extra_sizes):
        raise PayloadError(
            f"payload body of {name} should hold {terminal_nbytes + sum(extra_sizes)} bytes, got {payload.body.numel()}"
        )
    terminal_ctx = StageContext(numel, work_dtype, terminal_header, stage_seed(seed, len(transforms)))
    return _StagePlan(shape, dtype, contexts, extra_sizes, terminal_ctx, terminal_nbytes)


def check_stages_for(
    name: str,
    transforms: Sequence[TransformStage],
    terminal: TerminalStage,
    payload: Payload,
    shape: tuple[int, ...],
    dtype: torch.dtype,
) -> None:
    """:meth:`Codec.check_payload_for` of a stage or chain: the meta is ``shape`` and ``dtype``, every stage header
    is in range for that shape, and the header and body have exactly the lengths they imply.

    Raises:
        PayloadError: Naming the codec, what was expected and what the payload holds.
    """
    _plan_stages(name, transforms, terminal, payload, expected=(tuple(shape), dtype))


def decode_stages(
    name: str, transforms: Sequence[TransformStage], terminal: TerminalStage, payload: Payload
) -> torch.Tensor:
    """Inverse of :func:`encode_stages`: validate every header and the body size, then decode in reverse."""
    plan = _plan_stages(name, transforms, terminal, payload)
    body = payload.body
    y = terminal.deserialize(body[: plan.terminal_nbytes], plan.terminal_ctx)
    contexts, start = list(plan.contexts), plan.terminal_nbytes
    for i, size in enumerate(plan.extra_sizes):
        contexts[i] = replace(contexts[i], extra=body[start : start + size])
        start += size
    for stage, ctx in zip(reversed(transforms), reversed(contexts), strict=True):
        y = stage.inverse(y, replace(ctx, writable=not _shares_memory(y, body)))
    return y.to(plan.dtype).reshape(plan.shape)


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.numel() == 0 or b.numel() == 0:
        return False
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
