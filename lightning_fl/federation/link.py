"""One direction of the wire (server to client, or client to server): a codec applied to named tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lightning_fl.codecs.base import Codec, Identity
from lightning_fl.seeding import derive_seed


class Link:
    """Sends named tensors through a codec and returns what the receiver decodes, counting the payload bytes.

    Tensors that ``select`` rejects (small tensors, integer buffers) travel through :class:`Identity` as raw
    bytes. For a lossless codec the receiver's tensor *is* the sent tensor, so nothing is decoded or copied.

    Args:
        codec: The codec of this direction (``None``: raw float32).
        direction: ``"downlink"`` or ``"uplink"``; part of every payload seed.
        select: ``select(name, tensor) -> bool``: whether ``codec`` applies to a tensor (default: floating tensors).

    Example:
        >>> link = Link(None, "uplink")
        >>> nbytes, out = link.send(["w"], [torch.ones(3)], seed=0, round_idx=0, client_id=1)
        >>> nbytes > 12, out[0].tolist()
        (True, [1.0, 1.0, 1.0])
    """

    def __init__(
        self,
        codec: Codec | None,
        direction: str,
        select: Callable[[str, torch.Tensor], bool] | None = None,
    ) -> None:
        self.codec: Codec = codec if codec is not None else Identity()
        self.raw = Identity()
        self.direction = direction
        self._fixed_sizes: dict[tuple[object, ...], int] = {}
        self.select = select if select is not None else is_floating

    @property
    def lossless(self) -> bool:
        """Whether the receiver gets exactly what was sent."""
        return self.codec.lossless

    def codecs_for(self, names: Sequence[str], tensors: Sequence[torch.Tensor]) -> list[Codec]:
        """The codec each tensor travels through."""
        return [self.codec if self.select(n, t) else self.raw for n, t in zip(names, tensors, strict=False)]

    def send(
        self,
        names: Sequence[str],
        tensors: Sequence[torch.Tensor],
        *,
        seed: int,
        round_idx: int,
        client_id: int,
        codecs: Sequence[Codec] | None = None,
    ) -> tuple[int, list[torch.Tensor]]:
        """Encode every tensor, decode it as the receiver would, and count the bytes.

        Seeds derive from ``(seed, direction, round_idx, client_id, name)``; stateful codecs (error feedback) key
        their state by ``"{client_id}/{name}"``.

        Returns:
            ``(payload bytes, received tensors)``; a received tensor is the sent tensor itself when its codec
            is lossless.
        """
        codecs = self.codecs_for(names, tensors) if codecs is None else codecs
        total = 0
        received: list[torch.Tensor] = []
        for name, tensor, codec in zip(names, tensors, codecs, strict=True):
            if codec.fixed_size and codec.lossless:
                # the payload of this tensor has the same length every time: measured once, by encoding
                size_key = (name, tuple(tensor.shape), tensor.dtype, codec.name)
                size = self._fixed_sizes.get(size_key)
                if size is None:
                    size = self._fixed_sizes[size_key] = codec.encode(tensor, 0).nbytes
                total += size
                received.append(tensor)
                continue
            tensor_seed = derive_seed(seed, self.direction, round_idx, client_id, name) if codec.uses_seed else 0
            key = f"{client_id}/{name}" if codec.stateful else None
            payload = codec.encode(tensor, tensor_seed, key=key)
            total += payload.nbytes
            received.append(tensor if codec.lossless else codec.decode(payload))
        return total, received

    def dense_bytes(self, names: Sequence[str], tensors: Sequence[torch.Tensor]) -> int:
        """Bytes the same tensors take uncompressed (raw, floating tensors as float32), measured by encoding."""
        total = 0
        for tensor in tensors:
            t = tensor.float() if tensor.is_floating_point() else tensor
            total += self.raw.encode(t, 0).nbytes
        return total


def is_floating(name: str, tensor: torch.Tensor) -> bool:
    """The default tensor selection of a link: every floating tensor goes through the codec."""
    return tensor.is_floating_point()
