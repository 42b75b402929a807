"""Measure the largest memory request a piece of code makes, torch's CPU allocator and Python's together.

``tracemalloc`` sees only Python's allocator, and a process's max RSS only moves past its earlier peak, so torch's
allocations are read from the profiler (``profile_memory=True`` reports, per operator, the bytes the CPU allocator
handed out inside it). Test modules use ``with AllocationProbe() as probe: ...`` then read
``probe.largest_torch_bytes`` and ``probe.python_peak_bytes``.
"""

from __future__ import annotations

import tracemalloc
import warnings
from types import TracebackType

from torch.profiler import ProfilerActivity, profile


class AllocationProbe:
    """Context manager recording the largest torch CPU allocation of one operator and Python's peak."""

    def __init__(self) -> None:
        self.largest_torch_bytes = 0
        self.python_peak_bytes = 0
        self._profile: profile | None = None

    def __enter__(self) -> AllocationProbe:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "profiler clears events at the end of each cycle"
            self._profile = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._profile.__enter__()
        tracemalloc.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        _, self.python_peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert self._profile is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._profile.__exit__(kind, error, trace)
            events = self._profile.events()
        self.largest_torch_bytes = max((event.cpu_memory_usage for event in events), default=0)
