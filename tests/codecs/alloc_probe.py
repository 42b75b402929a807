"""Measure the largest memory request a piece of code makes, torch's CPU allocator and Python's together.

``tracemalloc`` sees only Python's allocator, and a process's max RSS only moves past its earlier peak, so torch's
allocations are read from the profiler: with ``profile_memory=True`` every request to torch's CPU allocator is a
``[memory]`` event holding its size. The raw kineto events are read (building the profiler's Python event tree
costs 30x the code under test); where a torch version lacks them, the per-operator totals are. Test modules use
``with AllocationProbe() as probe: ...`` then read ``probe.largest_torch_bytes`` and ``probe.python_peak_bytes``.
"""

from __future__ import annotations

import tracemalloc
import warnings
from types import TracebackType

from torch.profiler import ProfilerActivity, profile


class AllocationProbe:
    """Context manager recording the largest single torch CPU allocation and the peak of Python's allocations."""

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
            raw = getattr(self._profile.profiler, "kineto_results", None)
            if raw is not None:
                sizes = [event.nbytes() for event in raw.events() if event.name() == "[memory]"]
            else:
                sizes = [event.cpu_memory_usage for event in self._profile.events()]
        self.largest_torch_bytes = max(sizes, default=0)
