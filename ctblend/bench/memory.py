"""Peak memory of a reconstruction: resident-set-size growth sampled in a thread."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
from pathlib import Path

MEMORY_NOTE = (
    "peak_mem_mb: increase of the process's resident set size over its value at the start of the "
    "reconstruction (after garbage collection and glibc malloc_trim), sampled every 5 ms from "
    "/proc/self/statm (where /proc is missing: increase of resource.getrusage ru_maxrss); "
    "gpu_peak_mb: torch.cuda.max_memory_allocated (CUDA only)"
)


def _rss_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so
    that memory freed by earlier cells is not silently reused and missed by the RSS delta."""
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak RSS increase during a ``with`` block (see ``MEMORY_NOTE``), in MiB."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        _release_free_memory()
        self._base = _rss_bytes()
        if self._base is None:
            import resource

            self._base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return self
        self._peak = self._base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def __exit__(self, *exc) -> None:
        if self._base is None:
            import resource

            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._base_max
            self.peak_mb = max(0, grown) / 1024.0  # Linux reports kB
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes() or 0)
        self.peak_mb = (self._peak - self._base) / 2**20
