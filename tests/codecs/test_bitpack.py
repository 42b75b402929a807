"""Bit packing: every width 1..16, odd lengths, exact size, canonical bit order, clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_fl.codecs import pack_bits, packed_nbytes, unpack_bits
from lightning_fl.exceptions import FederatedConfigError, PayloadError


def _reference_stream(codes: list[int], bits: int) -> list[int]:
    """Low-order-first bit stream, one Python int at a time."""
    stream = 0
    for i, code in enumerate(codes):
        stream |= code << (bits * i)
    return list(stream.to_bytes(math.ceil(len(codes) * bits / 8), "little"))


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("count", [0, 1, 7, 9, 31, 1001])
def test_round_trip_and_size_for_every_width(bits, count):
    codes = torch.randint(0, 1 << bits, (count,), generator=torch.Generator().manual_seed(bits * count))
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(count * bits / 8) == packed_nbytes(count, bits)
    assert torch.equal(unpack_bits(packed, bits, count), codes)


@pytest.mark.parametrize("bits", range(1, 8))
def test_narrow_codes_form_the_canonical_low_order_first_stream(bits):
    codes = torch.randint(0, 1 << bits, (29,), generator=torch.Generator().manual_seed(bits))
    assert pack_bits(codes, bits).tolist() == _reference_stream(codes.tolist(), bits)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int16, torch.int32, torch.int64])
def test_accepts_every_integer_dtype_and_leaves_input_alone(dtype):
    codes = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1]).to(dtype)
    before = codes.clone()
    packed = pack_bits(codes, 1)
    assert packed.tolist() == [0b01001101, 0b1]
    assert torch.equal(codes, before)


def test_unpack_returns_requested_dtype():
    packed = pack_bits(torch.tensor([3, 1, 2]), 2)
    assert unpack_bits(packed, 2, 3, dtype=torch.float32).tolist() == [3.0, 1.0, 2.0]


@pytest.mark.parametrize("bits", [0, 17, 2.0])
def test_bad_width_is_refused(bits):
    with pytest.raises(FederatedConfigError, match="bits must be an integer in"):
        pack_bits(torch.zeros(3, dtype=torch.int64), bits)


def test_float_codes_are_refused():
    with pytest.raises(FederatedConfigError, match="integer or bool"):
        pack_bits(torch.zeros(3), 2)


@pytest.mark.parametrize("length", [1, 3])
def test_wrong_packed_length_is_a_payload_error(length):
    with pytest.raises(PayloadError, match="2 bytes"):
        unpack_bits(torch.zeros(length, dtype=torch.uint8), bits=3, count=5)
