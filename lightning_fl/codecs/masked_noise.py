"""FedMRN's uplink codec: a masked-noise update ``n * m`` travels as its 1-bit mask plus the noise seed."""

from __future__ import annotations

import math
import struct

import torch

from lightning_fl.codecs.base import (
    Codec,
    Payload,
    check_body,
    check_tensor_meta,
    pack_tensor_meta,
    unpack_tensor_meta,
)
from lightning_fl.codecs.bitpack import packed_nbytes
from lightning_fl.codecs.noise_masks import (
    MaskKind,
    NoiseKind,
    check_masked_noise,
    pack_mask,
    reconstruct_update,
    sample_noise,
)
from lightning_fl.exceptions import FederatedRuntimeError, PayloadError


class MaskedNoiseCodec(Codec):
    """Encodes an update of the form ``n(seed) * m`` (``m`` a binary or signed mask) as the packed mask and the seed:
    ``ceil(d / 8)`` bytes of mask, 8 bytes of seed, and the shape. The receiver regenerates ``n`` from the seed
    on its own device, bit for bit, and decodes ``n * m`` exactly.

    The encoder regenerates ``n`` from ``seed`` as well, so the client must draw its round's noise from the same
    seed the codec is called with (FedMRN's callback does). A tensor that is not ``n(seed) * m`` is refused.

    Args:
        mask: ``"binary"`` or ``"signed"``.
        noise: ``"uniform"``, ``"gaussian"`` or ``"rademacher"``.
        sigma: Noise scale.

    Example:
        >>> codec = MaskedNoiseCodec("binary", "uniform", 0.01)
        >>> n = sample_noise((100,), 42, "uniform", 0.01, "cpu")
        >>> update = n * (torch.arange(100) % 3 == 0).float()
        >>> p = codec.encode(update, seed=42)
        >>> p.body.numel(), torch.equal(codec.decode(p), update)
        (13, True)
    """

    lossless = False
    unbiased = False

    def __init__(self, mask: MaskKind = "binary", noise: NoiseKind = "uniform", sigma: float = 0.01) -> None:
        check_masked_noise(mask, noise, sigma)
        self.mask: MaskKind = mask
        self.noise: NoiseKind = noise
        self.sigma = float(sigma)

    @property
    def name(self) -> str:
        return f"MaskedNoiseCodec({self.mask},{self.noise},{self.sigma})"

    def encode(self, x: torch.Tensor, seed: int, key: str | None = None) -> Payload:
        n = sample_noise(x.shape, seed, self.noise, self.sigma, x.device)
        m = torch.round(x.detach().float() / n)
        low = 0.0 if self.mask == "binary" else -1.0
        in_alphabet = (m == 1.0) | (m == low)
        if not bool(in_alphabet.all()) or not torch.equal(n * m, x.detach().float()):
            raise FederatedRuntimeError(
                f"{self.name} can only send updates of the form n(seed) * m with m in its alphabet; the tensor "
                "given is not (was the round's noise drawn from the seed this codec was called with?)"
            )
        header = pack_tensor_meta(x.shape, x.dtype) + struct.pack("<Q", seed)
        return Payload(self.name, header, pack_mask(m, self.mask))

    def decode(self, payload: Payload) -> torch.Tensor:
        self.check_payload(payload)
        shape, dtype, offset = unpack_tensor_meta(payload.header, 0)
        self._check_header_length(payload, offset)
        (seed,) = struct.unpack_from("<Q", payload.header, offset)
        update = reconstruct_update(payload.body, seed, shape, self.mask, self.noise, self.sigma, payload.body.device)
        return update.to(dtype)

    def check_payload_for(self, payload: Payload, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """Refuse a payload whose meta is not ``shape`` and ``dtype``, whose header is not meta and seed, or whose
        body is not exactly the ``ceil(numel / 8)`` bytes of a packed mask."""
        self.check_payload(payload)
        offset = check_tensor_meta(self.name, payload.header, 0, shape, dtype)
        self._check_header_length(payload, offset)
        check_body(self.name, payload)
        expected = packed_nbytes(math.prod(shape), 1)
        if payload.body.numel() != expected:
            raise PayloadError(
                f"{self.name} payload body must hold the {expected}-byte packed mask of shape {tuple(shape)}, got "
                f"{payload.body.numel()} bytes"
            )

    def _check_header_length(self, payload: Payload, meta_end: int) -> None:
        if len(payload.header) != meta_end + 8:
            raise PayloadError(f"{self.name} header must hold {meta_end + 8} bytes, got {len(payload.header)}")

    def __repr__(self) -> str:
        return f"MaskedNoiseCodec(mask={self.mask!r}, noise={self.noise!r}, sigma={self.sigma})"
