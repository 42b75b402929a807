"""Deterministic 64-bit seeds derived from a base seed and a path of keys.

Every random choice in lightning-fl takes its seed from :func:`derive_seed` with an explicit path such as
``(seed, "sample", round_idx)`` or ``(seed, "uplink", round_idx, client_id, tensor_name)``, so two runs with
the same seed give the same numbers and no two streams share a small seed space.
"""

from __future__ import annotations

import hashlib

import torch

_MASK63 = (1 << 63) - 1


def derive_seed(seed: int, *keys: int | str) -> int:
    """Hash ``seed`` and ``keys`` into a non-negative 63-bit integer.

    Args:
        seed: The experiment's base seed.
        *keys: Integers or strings that name the random stream (a purpose, a round, a client, a tensor).

    Returns:
        A seed in ``[0, 2**63)``, suitable for ``torch.Generator.manual_seed`` and ``numpy.random.default_rng``.

    Example:
        >>> derive_seed(0, "sample", 3) == derive_seed(0, "sample", 3)
        True
        >>> derive_seed(0, "sample", 3) != derive_seed(0, "sample", 4)
        True
    """
    text = "\x1f".join([str(int(seed))] + [f"{type(k).__name__}:{k}" for k in keys])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK63


def generator(seed: int, *keys: int | str, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``derive_seed(seed, *keys)``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen
