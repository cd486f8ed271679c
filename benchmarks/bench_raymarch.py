"""Time and peak memory of the ``raymarch`` backend: construction, one FP, one BP (3D cone).

Each cell runs in a fresh subprocess so that its peak resident memory is its own; ``extra MiB``
is that peak minus the resident memory after imports and the input volume.

    python benchmarks/bench_raymarch.py 48x60x64 128x180x128   # N³ volume × views × det²
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

import operators as ops


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(n: int, views: int, det: int, budget: int | None) -> dict:
    """One cone geometry: source at 2n, detector at n beyond the centre, magnification 1.5."""
    x = torch.rand(1, n, n, n)
    base = _rss_mib()
    kwargs = {} if budget is None else {"memory_budget": budget}
    start = time.perf_counter()
    A = ops.Operator(
        ops.volume((n, n, n)),
        ops.cone(views, (det, det), 1.5 * n / det, 2.0 * n, 1.0 * n),
        backend="raymarch",
        **kwargs,
    )
    setup = time.perf_counter() - start
    start = time.perf_counter()
    y = A(x)
    fp = time.perf_counter() - start
    start = time.perf_counter()
    A.T(y)
    bp = time.perf_counter() - start
    peak = _rss_mib()
    return {
        "n": n,
        "views": views,
        "det": det,
        "setup_seconds": setup,
        "fp_seconds": fp,
        "bp_seconds": bp,
        "peak_rss_mib": peak,
        "extra_mib": peak - base,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", nargs="+", help="NxVIEWSxDET, e.g. 128x180x128")
    parser.add_argument("--budget", type=int, default=None, help="memory_budget in bytes")
    parser.add_argument("--one", action="store_true", help="run the single cell in-process")
    args = parser.parse_args(argv)
    for cell in args.cells:
        n, views, det = map(int, cell.split("x"))
        if args.one:
            print(json.dumps(run_one(n, views, det, args.budget)), flush=True)
            continue
        cmd = [sys.executable, __file__, cell, "--one"]
        cmd += [] if args.budget is None else ["--budget", str(args.budget)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        print(out.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
