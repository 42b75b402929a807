"""The one contract every codec passes: round trip, declared properties, determinism, real sizes, bad payloads."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
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
    Payload,
    RandomHadamard,
    RawSerializer,
    SignCompressor,
    StochasticQuantizer,
    Subsample,
    TopK,
)
from lightning_fl.codecs.base import pack_tensor_meta, unpack_tensor_meta
from lightning_fl.exceptions import FederatedConfigError, PayloadError

pytestmark = pytest.mark.usefixtures("single_thread")

# (factory, randomized: payload depends on the seed, numel bounded by body: a forged huge shape is refused)
CODECS: dict[str, tuple[Callable[[], Codec], bool, bool]] = {
    "identity": (Identity, False, True),
    "raw": (RawSerializer, False, True),
    "float16": (Float16, False, True),
    "bfloat16": (BFloat16, False, True),
    "cast-float32": (lambda: Cast("float32"), False, True),
    "hadamard": (RandomHadamard, True, True),
    "kashin": (Kashin, True, True),
    "kashin-clipped": (lambda: Kashin(lossless=False), True, True),
    "subsample": (lambda: Subsample(0.25), True, True),
    "subsample-all": (lambda: Subsample(1.0), True, True),  # keeps everything, but the seed still travels
    "quantize-1": (lambda: StochasticQuantizer(bits=1), True, True),
    "quantize-4": (lambda: StochasticQuantizer(bits=4), True, True),
    "quantize-8": (lambda: StochasticQuantizer(bits=8), True, True),
    "quantize-13": (lambda: StochasticQuantizer(bits=13), True, True),
    "quantize-16": (lambda: StochasticQuantizer(bits=16), True, True),
    "quantize-det": (lambda: StochasticQuantizer(bits=3, deterministic=True), False, True),
    "topk-fraction": (lambda: TopK(0.1), False, True),
    "topk-k": (lambda: TopK(k=5), False, False),
    "prune": (lambda: MagnitudePrune(0.2), False, True),
    "sign": (SignCompressor, False, True),
    "caldas-down": (lambda: Chain(Kashin(), StochasticQuantizer(bits=4)), True, True),
    "caldas-up": (lambda: Chain(RandomHadamard(), Subsample(0.25), StochasticQuantizer(bits=2)), True, True),
    "drive": (lambda: Chain(RandomHadamard(), SignCompressor()), True, True),
    "topk-quantized": (lambda: Chain(TopK(0.2), StochasticQuantizer(bits=8)), True, True),
    "half-hadamard": (lambda: Chain(RandomHadamard(), Float16()), True, True),
    "ef-topk": (lambda: ErrorFeedback(TopK(0.1)), False, True),
    "ef-caldas-up": (
        lambda: ErrorFeedback(Chain(RandomHadamard(), Subsample(0.25), StochasticQuantizer(bits=2))),
        True,
        True,
    ),
}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
SHAPES = [((37, 11), torch.float32), ((3, 4, 5), torch.float16), ((300,), torch.bfloat16), ((1,), torch.float32)]
KEY = "client0/layer.weight"


def _input(shape: tuple[int, ...], dtype: torch.dtype, device: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(sum(shape))
    return (torch.randn(shape, generator=gen) * 3 + 0.5).to(dtype=dtype, device=device)


def _round_trip(codec: Codec, x: torch.Tensor, seed: int) -> tuple[Payload, torch.Tensor]:
    payload = codec.encode(x, seed, key=KEY)
    return payload, codec.decode(payload)


@pytest.fixture(params=sorted(CODECS))
def spec(request: pytest.FixtureRequest) -> tuple[str, Callable[[], Codec], bool, bool]:
    factory, randomized, bounded = CODECS[request.param]
    return request.param, factory, randomized, bounded


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "dtype"), SHAPES)
def test_round_trip_keeps_shape_dtype_device_and_lossless_is_exact(spec, shape, dtype, device):
    _, factory, _, _ = spec
    codec = factory()
    x = _input(shape, dtype, device)
    payload, y = _round_trip(codec, x, seed=11)
    assert (y.shape, y.dtype, y.device) == (x.shape, x.dtype, x.device)
    assert payload.body.dtype == torch.uint8 and payload.body.dim() == 1
    assert payload.body.device == x.device
    if codec.lossless:
        tolerance = 4 * torch.finfo(dtype).eps * x.float().abs().max().item()
        torch.testing.assert_close(y.float(), x.float(), rtol=0, atol=tolerance)


def test_sizes_are_the_bytes_produced(spec):
    _, factory, _, _ = spec
    payload = factory().encode(_input((37, 11), torch.float32, "cpu"), seed=3, key=KEY)
    assert payload.nbytes == len(payload.header) + payload.body.numel()
    assert payload.nbytes == len(payload.to_bytes()) - 4


def test_decodes_from_serialised_bytes(spec):
    _, factory, _, _ = spec
    codec = factory()
    x = _input((37, 11), torch.float32, "cpu")
    payload, y = _round_trip(codec, x, seed=5)
    again = Payload.from_bytes(payload.codec, payload.to_bytes())
    assert torch.equal(codec.decode(again), y)


def test_same_seed_same_bytes_and_different_seed_different_bytes(spec):
    _, factory, randomized, _ = spec
    x = _input((37, 11), torch.float32, "cpu")
    first, second, other = (factory().encode(x, seed, key=KEY) for seed in (7, 7, 8))
    assert first.to_bytes() == second.to_bytes()
    assert (first.to_bytes() != other.to_bytes()) == randomized


def _declared_unbiased(name: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ErrorFeedback warns about rescaling codecs at construction
        return CODECS[name][0]().unbiased


@pytest.mark.parametrize("name", [n for n in sorted(CODECS) if _declared_unbiased(n)])
def test_declared_unbiasedness_holds(name):
    """An unbiased codec's mean over seeds converges to the input (6 standard errors).

    An element that rarely rounds up can show no spread in 300 draws, so each element's spread is floored at the
    median spread.
    """
    codec = CODECS[name][0]()
    x = _input((64,), torch.float32, "cpu")
    draws = torch.stack([codec.decode(codec.encode(x, seed, key=KEY)) for seed in range(300)])
    error = (draws.mean(0) - x).abs()
    spread = draws.std(0)
    standard_error = torch.maximum(spread, spread.median()) / 300**0.5
    assert torch.all(error <= 6 * standard_error + 1e-5 * x.abs().max())


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda p: Payload(p.codec, p.header, p.body[:-1]), id="truncated-body"),
        pytest.param(lambda p: Payload(p.codec, p.header, torch.cat([p.body, p.body[:1]])), id="longer-body"),
        pytest.param(lambda p: Payload(p.codec, p.header[:-1], p.body), id="truncated-header"),
        pytest.param(lambda p: Payload(p.codec, p.header + b"\0", p.body), id="longer-header"),
        pytest.param(lambda p: Payload(p.codec, p.header[:1], p.body), id="header-stub"),
        pytest.param(lambda p: Payload("StochasticQuantizer(bits=5)", p.header, p.body), id="other-codec"),
    ],
)
def test_malformed_payload_raises_payload_error(spec, mutate):
    _, factory, _, _ = spec
    codec = factory()
    payload = codec.encode(_input((37, 11), torch.float32, "cpu"), seed=1, key=KEY)
    with pytest.raises(PayloadError):
        codec.decode(mutate(payload))


def test_payload_of_another_codec_raises_payload_error(spec):
    name, factory, _, _ = spec
    x = _input((37, 11), torch.float32, "cpu")
    foreign = (SignCompressor() if name != "sign" else Identity()).encode(x, seed=1)
    with pytest.raises(PayloadError, match="cannot decode"):
        factory().decode(foreign)


@pytest.mark.parametrize("name", [n for n in sorted(CODECS) if CODECS[n][2]])  # fixed-k top-k bounds no size
def test_forged_huge_shape_is_refused_before_allocating(name):
    codec = CODECS[name][0]()
    payload = codec.encode(_input((37, 11), torch.float32, "cpu"), seed=1, key=KEY)
    _, _, meta_end = unpack_tensor_meta(payload.header, 0)
    forged = Payload(
        payload.codec, pack_tensor_meta((1 << 16, 1 << 17), torch.float32) + payload.header[meta_end:], payload.body
    )
    with pytest.raises(PayloadError):
        codec.decode(forged)


@pytest.mark.parametrize("name", [n for n in sorted(CODECS) if n != "identity"])  # Identity sends any dtype
def test_integer_tensors_are_refused(name):
    with pytest.raises(FederatedConfigError, match="floating"):
        CODECS[name][0]().encode(torch.arange(10), seed=0, key=KEY)


def test_empty_tensor_round_trips(spec):
    _, factory, _, _ = spec
    codec = factory()
    x = torch.empty(0, 3)
    payload, y = _round_trip(codec, x, seed=2)
    assert y.shape == (0, 3) and payload.nbytes == len(payload.header) + payload.body.numel()


def test_bad_seed_is_refused():
    with pytest.raises(FederatedConfigError, match="seed must be"):
        RandomHadamard().encode(torch.ones(3), seed=-1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 2, 5)])
def test_zero_element_tensors_round_trip_in_memory_and_through_bytes(spec, shape, device):
    _, factory, _, _ = spec
    codec = factory()
    x = torch.zeros(shape, device=device)
    payload, y = _round_trip(codec, x, seed=2)
    assert (y.shape, y.dtype, y.device) == (x.shape, x.dtype, x.device)
    assert payload.nbytes == len(payload.to_bytes()) - 4
    # an empty body used to crash torch.frombuffer
    again = Payload.from_bytes(payload.codec, payload.to_bytes(), device=device)
    assert again.body.dtype == torch.uint8 and again.body.shape == payload.body.shape
    assert again.body.device == x.device
    assert codec.decode(again).shape == x.shape
