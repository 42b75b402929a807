"""Seeding a client's training, so one process gives the same numbers as two and a resumed run needs no RNG state."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_client(seed: int, device: torch.device) -> None:
    """Seed the global generators a client's training may draw from (torch on its device, numpy, random).

    ``torch.manual_seed`` would also queue lazy seeding of every uninitialised accelerator backend, recording a
    stack trace each time; on the hot path of every client that cost more than the seeding itself.

    Example:
        >>> seed_client(3, torch.device("cpu")); a = torch.rand(1)
        >>> seed_client(3, torch.device("cpu")); bool(torch.equal(a, torch.rand(1)))
        True
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)
