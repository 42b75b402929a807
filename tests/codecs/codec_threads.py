"""A fixture that runs a codec test single-threaded.

The tensors in these tests are small, and on a busy shared runner an oversubscribed OpenMP pool turns each
small GEMM of the Hadamard transform into a scheduler time slice (~16 ms). Test modules opt in with
``from codec_threads import single_thread`` and ``pytestmark = pytest.mark.usefixtures("single_thread")``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
