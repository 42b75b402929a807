"""Payloads from the network: every codec checks one against the tensor it must become before decoding it.

For every codec: a genuine payload passes and decodes exactly as ``decode`` does; one checked against another shape
or dtype, truncated, extended, or with a lying header length is refused; a forged huge shape is refused without
allocating; and seeded random mutations either are refused with :class:`PayloadError` or decode to a tensor of the
right shape and dtype, with no allocation beyond a few times the tensor's size.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from alloc_probe import AllocationProbe
from codec_threads import single_thread  # noqa: F401 - fixture

from lightning_fl.codecs import (
    BFloat16,
    Cast,
    Chain,
    Codec,
    ErrorFeedback,
    Float16,
    Identity,
    Kashin,
    MagnitudePrune,
    MaskedNoiseCodec,
    Payload,
    RandomHadamard,
    RawSerializer,
    SignCompressor,
    StochasticQuantizer,
    Subsample,
    TopK,
)
from lightning_fl.codecs.base import pack_tensor_meta, unpack_tensor_meta
from lightning_fl.codecs.noise_masks import sample_noise
from lightning_fl.codecs.untrusted import decode_untrusted
from lightning_fl.exceptions import PayloadError

pytestmark = pytest.mark.usefixtures("single_thread")

CODECS: dict[str, Callable[[], Codec]] = {
    "identity": Identity,
    "raw": RawSerializer,
    "float16": Float16,
    "bfloat16": BFloat16,
    "cast-float32": lambda: Cast("float32"),
    "hadamard": RandomHadamard,
    "kashin": Kashin,
    "kashin-clipped": lambda: Kashin(lossless=False),
    "subsample": lambda: Subsample(0.25),
    "quantize-1": lambda: StochasticQuantizer(bits=1),
    "quantize-4": lambda: StochasticQuantizer(bits=4),
    "quantize-13": lambda: StochasticQuantizer(bits=13),
    "quantize-16": lambda: StochasticQuantizer(bits=16),
    "quantize-det": lambda: StochasticQuantizer(bits=3, deterministic=True),
    "topk-fraction": lambda: TopK(0.1),
    "topk-k": lambda: TopK(k=5),
    "prune": lambda: MagnitudePrune(0.2),
    "sign": SignCompressor,
    "hadamard-quantize": lambda: Chain(RandomHadamard(), StochasticQuantizer(bits=4)),
    "kashin-quantize": lambda: Chain(Kashin(), StochasticQuantizer(bits=4)),
    "hadamard-subsample-quantize": lambda: Chain(RandomHadamard(), Subsample(0.25), StochasticQuantizer(bits=2)),
    "drive": lambda: Chain(RandomHadamard(), SignCompressor()),
    "topk-quantize": lambda: Chain(TopK(0.2), StochasticQuantizer(bits=8)),
    "hadamard-float16": lambda: Chain(RandomHadamard(), Float16()),
    "ef-topk": lambda: ErrorFeedback(TopK(0.1)),
    "ef-chain": lambda: ErrorFeedback(Chain(RandomHadamard(), TopK(0.1), StochasticQuantizer(bits=8))),
    "masked-noise-binary": lambda: MaskedNoiseCodec("binary", "uniform", 0.01),
    "masked-noise-signed": lambda: MaskedNoiseCodec("signed", "gaussian", 0.01),
}
SHAPES = [((37, 11), torch.float32), ((3, 4, 5), torch.float16), ((300,), torch.bfloat16), ((1,), torch.float32)]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
KEY = "client0/layer.weight"
SEED = 11


def _input(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: str = "cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(sum(shape))
    if name.startswith("masked-noise"):  # the codec sends only n(seed) * m, m in its alphabet
        codec = CODECS[name]()
        assert isinstance(codec, MaskedNoiseCodec)
        mask = torch.randint(0, 2, shape, generator=gen).float().to(device)
        mask = mask if codec.mask == "binary" else mask * 2 - 1
        return (sample_noise(shape, SEED, codec.noise, codec.sigma, device) * mask).to(dtype)
    return (torch.randn(shape, generator=gen) * 3 + 0.5).to(dtype=dtype, device=device)


def _cases() -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    # a masked-noise update is exact only in float32 (the codec compares n * m with the tensor given)
    return [(n, s, d) for n in sorted(CODECS) for s, d in SHAPES if d == torch.float32 or "masked" not in n]


def _genuine(
    name: str, shape: tuple[int, ...], dtype: torch.dtype, device: str = "cpu"
) -> tuple[Codec, Payload, bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ErrorFeedback warns about rescaling codecs
        codec = CODECS[name]()
    payload = codec.encode(_input(name, shape, dtype, device), SEED, key=KEY)
    return codec, payload, payload.to_bytes()


def _budget(shape: tuple[int, ...]) -> int:
    """What a server allows one tensor: four times its dense float32 bytes (Kashin's frame holds up to 4 d
    coefficients, Hadamard's up to 2 d) plus room for headers."""
    return 16 * math.prod(shape) + 256


def _as_bytes(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().reshape(-1).view(torch.uint8)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "shape", "dtype"), _cases())
def test_genuine_payload_passes_and_decodes_bit_identically(name, shape, dtype, device):
    codec, payload, data = _genuine(name, shape, dtype, device)
    codec.check_payload_for(payload, shape, dtype)
    reference = codec.decode(payload)
    decoded = decode_untrusted(codec, data, shape, dtype, max_bytes=_budget(shape), device=device)
    assert (decoded.shape, decoded.dtype, decoded.device) == (torch.Size(shape), dtype, reference.device)
    assert torch.equal(_as_bytes(decoded), _as_bytes(reference))


def _other_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    numel = math.prod(shape)
    same_numel = (numel,) if len(shape) > 1 else (1, numel)
    return [same_numel, (shape[0] + 1, *shape[1:]), (*shape, 2)]


@pytest.mark.parametrize(("name", "shape", "dtype"), _cases())
def test_payload_checked_against_another_shape_or_dtype_is_refused(name, shape, dtype):
    codec, payload, data = _genuine(name, shape, dtype)
    other_dtype = torch.float64
    for expected_shape, expected_dtype in [*((s, dtype) for s in _other_shapes(shape)), (shape, other_dtype)]:
        with pytest.raises(PayloadError, match=r"expected shape .* and dtype"):
            codec.check_payload_for(payload, expected_shape, expected_dtype)
        with pytest.raises(PayloadError):
            decode_untrusted(codec, data, expected_shape, expected_dtype, max_bytes=len(data))


def _with_header_length(data: bytes, length: int) -> bytes:
    return struct.pack("<I", length) + data[4:]


@pytest.mark.parametrize(("name", "shape", "dtype"), _cases())
def test_truncated_extended_or_lying_header_length_is_refused(name, shape, dtype):
    codec, _, data = _genuine(name, shape, dtype)
    (header_length,) = struct.unpack_from("<I", data)
    forged = {
        "truncated": data[:-1],
        "extended": data + b"\0",
        "header-length+1": _with_header_length(data, header_length + 1),
        "header-length-1": _with_header_length(data, header_length - 1),
        "header-length-huge": _with_header_length(data, 0xFFFFFFFF),
    }
    for what, bad in forged.items():
        with pytest.raises(PayloadError):
            decode_untrusted(codec, bad, shape, dtype, max_bytes=len(data) + 1)
            pytest.fail(f"{what} payload was accepted")


def test_fifty_byte_top_k_payload_claiming_two_to_the_28_elements_is_refused_without_allocating():
    """The issue's case: a hostile client sends five values and five indices but claims 2**28 elements (1 GiB of
    float32 to decode). Checked against the model's real tensor it is refused, with no allocation beyond a few KB."""
    codec = TopK(k=5)
    values = torch.ones(5).view(torch.uint8)
    indices = torch.tensor([0, 1, 2, 3, 1 << 27], dtype=torch.int32).view(torch.uint8)
    data = Payload(codec.name, pack_tensor_meta((1 << 28,), torch.float32), torch.cat([values, indices])).to_bytes()
    assert len(data) == 50
    with AllocationProbe() as probe, pytest.raises(PayloadError, match=r"expected shape \(37, 11\)"):
        decode_untrusted(codec, data, (37, 11), torch.float32, max_bytes=_budget((37, 11)))
    assert probe.largest_torch_bytes <= 4096 and probe.python_peak_bytes <= 16384, vars(probe)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_forged_huge_shape_is_refused_without_allocating(name):
    codec, payload, _ = _genuine(name, (37, 11), torch.float32)
    _, _, meta_end = unpack_tensor_meta(payload.header, 0)
    forged_meta = pack_tensor_meta((1 << 14, 1 << 14), torch.float32)
    data = Payload(payload.codec, forged_meta + payload.header[meta_end:], payload.body).to_bytes()
    with AllocationProbe() as probe, pytest.raises(PayloadError, match="expected shape"):
        decode_untrusted(codec, data, (37, 11), torch.float32, max_bytes=_budget((37, 11)))
    assert probe.largest_torch_bytes <= 4096 and probe.python_peak_bytes <= 16384, vars(probe)


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption: overwrite 1-3 bytes, truncate, extend, cut out a slice, or rewrite the header length."""
    kind = int(rng.integers(5))
    buf = bytearray(data)
    if kind == 0:
        for position in rng.integers(len(buf), size=int(rng.integers(1, 4))):
            buf[int(position)] = int(rng.integers(256))
    elif kind == 1:
        del buf[int(rng.integers(len(buf))) :]
    elif kind == 2:
        buf += rng.integers(256, size=int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    elif kind == 3:
        start = int(rng.integers(len(buf)))
        del buf[start : start + int(rng.integers(1, 9))]
    else:
        buf[:4] = struct.pack("<I", int(rng.integers(len(buf))))
    return bytes(buf)


def _decode_directly(codec: Codec, data: bytes, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
    """The checks and the codec's own decode, without decode_untrusted's net for torch's errors: None if refused."""
    try:
        payload = Payload.from_bytes(codec.name, data)
        codec.check_payload_for(payload, shape, dtype)
        return codec.decode(payload)
    except PayloadError:
        return None


@pytest.mark.parametrize("name", sorted(CODECS))
def test_random_mutations_are_refused_or_decode_to_the_right_shape_and_dtype(name):
    shape, dtype = (37, 11), torch.float32
    codec, _, data = _genuine(name, shape, dtype)
    rng = np.random.default_rng(sorted(CODECS).index(name))
    mutated = [_mutate(data, rng) for _ in range(200)]
    with AllocationProbe() as probe:
        outcomes = [_decode_directly(codec, bad, shape, dtype) for bad in mutated]
    decoded = [y for y in outcomes if y is not None]
    assert all((y.shape, y.dtype) == (torch.Size(shape), dtype) for y in decoded)
    assert len(decoded) < len(outcomes), "no mutation was refused: the fuzz does not reach the checks"
    # the largest buffer any decode needs is a few copies of the tensor (Kashin's frame: 512 float32 here)
    assert probe.largest_torch_bytes <= 2 * _budget(shape), vars(probe)


@pytest.mark.parametrize("indices", [[3, 3, 7], [7, 3, 9]], ids=["repeated", "out-of-order"])
def test_top_k_indices_that_no_encoder_writes_are_refused(indices):
    """A repeated index would make the decoded tensor depend on the order of index_copy_'s writes (undefined on
    CUDA); encoders write strictly increasing indices, so anything else is refused."""
    codec = TopK(k=3)
    values = torch.tensor([1.0, 2.0, 3.0]).view(torch.uint8)
    body = torch.cat([values, torch.tensor(indices, dtype=torch.int16).view(torch.uint8)])
    data = Payload(codec.name, pack_tensor_meta((37, 11), torch.float32), body).to_bytes()
    with pytest.raises(PayloadError, match="strictly increasing"):
        decode_untrusted(codec, data, (37, 11), torch.float32, max_bytes=_budget((37, 11)))


def test_sign_payload_with_a_huge_finite_scale_decodes_to_plus_minus_that_scale():
    """A finite scale above 1.7e38 used to decode to NaN (bit * 2 * scale overflowed before subtracting scale)."""
    codec = SignCompressor()
    payload = codec.encode(torch.tensor([1.0, -1.0, 0.0]), seed=0)
    data = Payload(payload.codec, payload.header[:-4] + struct.pack("<f", 3e38), payload.body).to_bytes()
    decoded = decode_untrusted(codec, data, (3,), torch.float32, max_bytes=_budget((3,)))
    assert decoded.tolist() == [pytest.approx(3e38), pytest.approx(-3e38), pytest.approx(3e38)]


def _with_count(payload: Payload, offset: int, count: int, body: torch.Tensor) -> bytes:
    header = payload.header[:offset] + struct.pack("<I", count) + payload.header[offset + 4 :]
    return Payload(payload.codec, header, body).to_bytes()


def test_inner_stage_counts_are_checked_against_what_the_expected_shape_implies():
    """Hadamard pads 407 elements to 512; Subsample(0.25) of 512 keeps about 128. A count far from that is refused
    by the check, one close to it (with a body of the matching length) by the decoder's mask rebuilt from the seed."""
    codec = Chain(RandomHadamard(), Subsample(0.25), StochasticQuantizer(bits=2))
    shape, dtype = (37, 11), torch.float32
    payload = codec.encode(_input("subsample", shape, dtype), SEED)
    offset = 2 + 4 * len(shape) + 8  # meta, seed, then the subsample count
    (count,) = struct.unpack_from("<I", payload.header, offset)
    far = Payload.from_bytes(codec.name, _with_count(payload, offset, 512, torch.zeros(128, dtype=torch.uint8)))
    with pytest.raises(PayloadError, match="impossible for fraction"):
        codec.check_payload_for(far, shape, dtype)  # before decoding
    near = _with_count(payload, offset, count + 4, torch.cat([payload.body, torch.zeros(1, dtype=torch.uint8)]))
    codec.check_payload_for(Payload.from_bytes(codec.name, near), shape, dtype)  # plausible: only the seed can tell
    with pytest.raises(PayloadError, match="mask rebuilt from the seed"):
        decode_untrusted(codec, near, shape, dtype, max_bytes=_budget(shape))


def test_prune_count_beyond_the_expected_tensor_is_refused():
    codec = MagnitudePrune(0.2)
    shape, dtype = (37, 11), torch.float32
    payload = codec.encode(_input("prune", shape, dtype), SEED)
    offset = 2 + 4 * len(shape)
    body = torch.zeros(408 * 6, dtype=torch.uint8)  # what 408 kept values and int16 indices would take
    forged = Payload.from_bytes(codec.name, _with_count(payload, offset, 408, body))
    with pytest.raises(PayloadError, match="keeps 408 of 407 entries"):
        codec.check_payload_for(forged, shape, dtype)  # before decoding
