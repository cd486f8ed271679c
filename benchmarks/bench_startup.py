"""Start-up time of the ``ctblend`` command: ``--help``, ``info`` and the first error on bad paths.

Usage::

    python benchmarks/bench_startup.py [--repeat 5] [--tree PATH]

Runs each command ``--repeat`` times as a fresh ``python -m ctblend`` process (after one warm-up
run, so the files are in the page cache) and prints the median and minimum wall time in a
Markdown table with the machine and its load. ``--tree`` puts another checkout first on
``PYTHONPATH`` (e.g. an older commit unpacked with ``git archive``) to compare before/after.
Target (issue 14): ``--help`` and a missing-file error in under 2 s on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "ctblend --help": ["--help"],
    "ctblend info": ["info"],
    "recon: missing input": ["recon", "missing.h5", "--method", "diffusionblend++"],
    "demo: missing --volume": ["demo", "--volume", "missing.h5"],
    "demo: unwritable --out": ["demo", "--out", "/proc/ctblend_demo"],
}


def time_command(args: list[str], env: dict[str, str], cwd: str) -> float:
    """Wall time of one ``python -m ctblend ARGS`` run."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ctblend", *args], env=env, cwd=cwd, capture_output=True, check=False
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tree", type=Path, help="a checkout to run instead of the installed one")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    if args.tree:
        env["PYTHONPATH"] = str(args.tree.resolve())
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    print("\n| command | median (s) | min (s) |\n|---|---:|---:|")
    with tempfile.TemporaryDirectory() as cwd:
        for name, command in COMMANDS.items():
            time_command(command, env, cwd)  # warm-up: page cache, .pyc files
            times = [time_command(command, env, cwd) for _ in range(args.repeat)]
            print(f"| `{name}` | {statistics.median(times):.2f} | {min(times):.2f} |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
