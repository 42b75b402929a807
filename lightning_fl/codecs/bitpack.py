"""Dense packing of ``q``-bit codes into bytes (1 <= q <= 16), vectorised and on the tensor's device.

Layout of ``pack_bits(codes, q)`` for ``d`` codes, ``q = 8 * f + r`` with ``0 <= r < 8``:

* ``f`` byte planes of ``d`` bytes each: plane ``j`` holds bits ``8j .. 8j+7`` of every code;
* then the low-order-first bit stream of the remaining ``r`` high bits of every code: code ``i`` occupies
  stream bits ``r*i .. r*i + r - 1``, bit ``b`` of the stream sits in byte ``b // 8`` at bit ``b % 8``.

The total is ``d * f + ceil(d * r / 8) = ceil(d * q / 8)`` bytes: nothing is wasted beyond the last byte.
The stream is built eight codes at a time: eight ``r``-bit codes are exactly ``r`` bytes, assembled in one
64-bit word with shifts and read back through a little-endian byte view (every platform PyTorch supports is
little-endian).
"""

from __future__ import annotations

import torch

from lightning_fl.checks import check_int
from lightning_fl.exceptions import FederatedConfigError, PayloadError

_INT_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take once packed: ``ceil(count * bits / 8)``."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    check_int("bits", bits, low=1, high=16)


def _word_layout(rem: int) -> tuple[torch.dtype, int]:
    """Integer type of one packing word and how many ``rem``-bit codes it holds.

    Widths that divide 8 pack ``8 // rem`` codes per byte; others pack eight codes into ``rem`` bytes of the
    smallest integer type that holds ``8 * rem`` bits (read back through its little-endian byte view).
    """
    if 8 % rem == 0:
        return torch.uint8, 8 // rem
    return (torch.int32 if rem <= 4 else torch.int64), 8


def _pack_stream(codes: torch.Tensor, rem: int, masked: bool = False) -> torch.Tensor:
    """Pack integer codes into the low-order-first stream of ``rem`` < 8 bits per code."""
    count = codes.numel()
    word, per_word = _word_layout(rem)
    groups = -(-count // per_word)
    lanes = codes.to(word)
    if not masked:
        if lanes.data_ptr() == codes.data_ptr():
            lanes = lanes.clone()
        lanes.bitwise_and_((1 << rem) - 1)
    if count % per_word:
        lanes = torch.cat([lanes, lanes.new_zeros(groups * per_word - count)])
    lanes = lanes.view(groups, per_word)
    words = torch.empty(groups, dtype=word, device=codes.device)
    words.copy_(lanes[:, 0])
    for j in range(1, per_word):
        words.bitwise_or_(lanes[:, j] << (rem * j))
    if word == torch.uint8:
        return words
    stream = words.view(torch.uint8).view(groups, words.element_size())[:, :rem].reshape(-1)
    return stream[: packed_nbytes(count, rem)]


def _unpack_stream(stream: torch.Tensor, rem: int, count: int, dtype: torch.dtype) -> torch.Tensor:
    word, per_word = _word_layout(rem)
    groups = -(-count // per_word)
    if word == torch.uint8:
        words = stream.view(groups, 1)
    else:
        itemsize = 4 if word == torch.int32 else 8
        padded = torch.zeros(groups * rem, dtype=torch.uint8, device=stream.device)
        padded[: stream.numel()] = stream
        lanes = torch.zeros((groups, itemsize), dtype=torch.uint8, device=stream.device)
        lanes[:, :rem] = padded.view(groups, rem)
        words = lanes.view(word)  # (groups, 1): eight codes per word
    shifts = torch.arange(0, per_word * rem, rem, dtype=word, device=stream.device)
    codes = (words >> shifts).bitwise_and_((1 << rem) - 1).view(-1)[:count]
    return codes.to(dtype)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes in ``[0, 2**bits)`` densely into ``ceil(numel * bits / 8)`` bytes.

    Args:
        codes: Integer (or bool) tensor of any shape; values are read modulo ``2**bits``.
        bits: Bits per code, 1 to 16.

    Returns:
        A 1-D ``torch.uint8`` tensor on the device of ``codes``.

    Raises:
        FederatedConfigError: If ``bits`` is not in [1, 16] or ``codes`` is not an integer tensor.

    Example:
        >>> packed = pack_bits(torch.tensor([1, 0, 3, 2, 3]), bits=2)
        >>> packed.numel(), unpack_bits(packed, bits=2, count=5).tolist()
        (2, [1, 0, 3, 2, 3])
    """
    _check_bits(bits)
    if codes.dtype not in _INT_DTYPES:
        raise FederatedConfigError(f"codes must be an integer or bool tensor, got {codes.dtype}")
    return _pack(codes, bits, masked=False)


def _pack(codes: torch.Tensor, bits: int, masked: bool) -> torch.Tensor:
    """:func:`pack_bits` without argument checks; ``masked`` promises codes already in ``[0, 2**bits)``."""
    flat = codes.reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    full, rem = divmod(bits, 8)
    parts = []
    for plane in range(full):
        shifted = flat if plane == 0 else flat >> (8 * plane)
        parts.append(shifted.to(torch.uint8) if shifted.dtype != torch.uint8 else shifted.clone())
    if rem:
        high = flat if full == 0 else flat >> (8 * full)
        parts.append(_pack_stream(high, rem, masked))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def unpack_bits(packed: torch.Tensor, bits: int, count: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: read ``count`` codes of ``bits`` bits.

    Args:
        packed: 1-D ``torch.uint8`` tensor of exactly ``ceil(count * bits / 8)`` bytes.
        bits: Bits per code, 1 to 16.
        count: Number of codes to read.
        dtype: Integer or floating dtype of the result (``torch.int64`` by default).

    Returns:
        A 1-D tensor of ``dtype`` holding ``count`` codes in ``[0, 2**bits)`` on the device of ``packed``.

    Raises:
        PayloadError: If ``packed`` is not a 1-D uint8 tensor of the expected length.

    Example:
        >>> unpack_bits(pack_bits(torch.arange(5), bits=3), bits=3, count=5).tolist()
        [0, 1, 2, 3, 4]
    """
    _check_bits(bits)
    if count < 0:
        raise PayloadError(f"count must be non-negative, got {count}")
    expected = packed_nbytes(count, bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != expected:
        raise PayloadError(
            f"packed codes must be a 1-D uint8 tensor of ceil({count} * {bits} / 8) = {expected} bytes, "
            f"got {packed.dtype} of shape {tuple(packed.shape)}"
        )
    full, rem = divmod(bits, 8)
    if full == 0:
        return _unpack_stream(packed, rem, count, dtype)
    codes = packed[:count].to(torch.int32)
    if full == 2:
        codes.bitwise_or_(packed[count : 2 * count].to(torch.int32) << 8)
    if rem:
        codes.bitwise_or_(_unpack_stream(packed[full * count :], rem, count, torch.int32) << (8 * full))
    return codes.to(dtype)
