"""A pytest plugin that logs the resident memory after every test, to find what holds memory.

Usage (writes one line per test: RSS now and peak so far in MiB, the test's id)::

    PYTHONPATH=benchmarks RSS_LOG=rss.tsv python -m pytest -q -p pytest_rss

Sort the log by the jump in RSS to see which test (or module-scoped fixture) keeps memory.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pytest_runtest_logfinish(nodeid: str, location) -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with Path(os.environ.get("RSS_LOG", "rss.tsv")).open("a") as f:
        f.write(f"{_rss_mib():.0f}\t{peak:.0f}\t{nodeid}\n")
