"""Time to build the ``torch_sparse`` system matrix (and its transpose) for 2D geometries.

Each cell runs in a fresh subprocess (nothing cached). Build only: the first ``A(x)`` pays it.

    python benchmarks/bench_sparse_build.py 128x180 256x180   # N² grid × views, 2N bins
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

import operators as ops


def run_one(n: int, views: int, kind: str) -> dict:
    pg = (
        ops.parallel(views, 2 * n)
        if kind == "parallel"
        else ops.fan_flat(views, 2 * n, 1.5, 2.0 * n, 1.0 * n)
    )
    A = ops.Operator(ops.volume((n, n)), pg, backend="torch_sparse")
    x = torch.zeros(1, n, n)
    start = time.perf_counter()
    A(x)  # builds and caches the matrix
    build = time.perf_counter() - start
    start = time.perf_counter()
    A(x)
    cached = time.perf_counter() - start
    return {
        "n": n,
        "views": views,
        "geometry": kind,
        "build_seconds": build - cached,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", nargs="+", help="NxVIEWS, e.g. 256x180")
    parser.add_argument("--geometry", choices=("parallel", "fan"), default="parallel")
    parser.add_argument("--one", action="store_true", help="run the single cell in-process")
    args = parser.parse_args(argv)
    for cell in args.cells:
        n, views = map(int, cell.split("x"))
        if args.one:
            print(json.dumps(run_one(n, views, args.geometry)), flush=True)
            continue
        cmd = [sys.executable, __file__, cell, "--one", "--geometry", args.geometry]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        print(out.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
