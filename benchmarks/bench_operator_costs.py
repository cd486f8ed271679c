"""What the operator backends cost: raymarch time and memory, torch_sparse build time, and the
backend × geometry table of docs/operators.md (adjoint error, gradients, memory per sample).

Every cell runs in a fresh subprocess (nothing cached, its own peak resident memory, glibc
allocations over 64 KiB mmapped so that freed memory leaves the resident set; ``extra MiB`` is
the peak minus the resident memory after imports and the inputs).

    python benchmarks/bench_operator_costs.py raymarch 48x60x64 128x180x128  # N³ × views × det²
    python benchmarks/bench_operator_costs.py sparse 128x180 256x180          # N² × views
    python benchmarks/bench_operator_costs.py table                           # Markdown table
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

import operators as ops
from operators.backends import raymarch
from operators.backends.astra import astra_available


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def raymarch_cell(n: int, views: int, det: int, budget: int | None) -> dict:
    """Cone scan: source at 2n, detector n beyond the centre, magnification 1.5."""
    x = torch.rand(1, n, n, n)
    base = _rss_mib()
    start = time.perf_counter()
    A = ops.Operator(
        ops.volume((n, n, n)),
        ops.cone(views, (det, det), 1.5 * n / det, 2.0 * n, 1.0 * n),
        backend="raymarch",
        memory_budget=budget,
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


def sparse_cell(n: int, views: int, kind: str) -> dict:
    """Build time of the matrix and its transpose (the first ``A(x)`` less a cached one)."""
    if kind == "parallel":
        pg = ops.parallel(views, 2 * n)
    else:
        pg = ops.fan_flat(views, 2 * n, 1.5, 2.0 * n, 1.0 * n)
    A = ops.Operator(ops.volume((n, n)), pg, backend="torch_sparse")
    x = torch.zeros(1, n, n)
    start = time.perf_counter()
    A(x)
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


def _table_geometries() -> dict:
    """(backend, geometry name) → (volume, projection geometry, dtype of the dot test)."""
    vol2, vol3 = ops.volume((128, 128)), ops.volume((32, 32, 32))
    par = ops.parallel(90, 256)
    fan = ops.fan_flat(90, 256, 1.5, 256.0, 128.0)
    cone = ops.cone(40, (48, 48), 1.0, 64.0, 32.0)
    p3 = ops.parallel3d(40, (48, 48))
    cells = {}
    for name, pg in {
        "parallel": par,
        "parallel_vec": ops.parallel_vec(par.to_vec().vectors, 256),
        "fan_flat": fan,
        "fan_arc": ops.fan_arc(90, 256, 1.5, 256.0, 128.0),
        "fan_vec": ops.fan_vec(fan.to_vec().vectors, 256),
    }.items():
        cells[("torch_sparse", name)] = (vol2, pg, torch.float64)
        if name != "fan_arc":
            cells[("astra", name)] = (vol2, pg, torch.float32)
    for name, pg in {
        "parallel3d": p3,
        "parallel3d_vec": ops.parallel3d_vec(p3.to_vec().vectors, (48, 48)),
        "cone": cone,
        "cone_vec": ops.cone_vec(cone.to_vec().vectors, (48, 48)),
    }.items():
        cells[("raymarch", name)] = (vol3, pg, torch.float64)
    return cells


def _reset_peak() -> float:
    """Reset the kernel's peak-RSS mark (``/proc/self/clear_refs``); the resident MiB now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mib("VmRSS")


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _state(A: ops.Operator) -> str:
    """What the operator keeps between calls."""
    if A.backend.name == "torch_sparse":
        return f"matrix {A.backend.matrix('cpu', torch.float32).nbytes / 2**20:.0f} MiB (float32)"
    if A.backend.name == "raymarch":
        budget = A.backend.budget or raymarch.DEFAULT_BUDGET_BYTES["cpu"]
        return f"none; ≤ {budget / 2**20:.0f} MiB of sample points per chunk"
    return "ASTRA projector"


def table_cell(backend: str, name: str) -> dict:
    """Dot test, the gradient against ``Aᵀ``, and the peak memory one FP + BP adds per batch
    item (batch 9 against batch 1, after the set-up: matrix build, projector creation)."""
    vol, pg, dtype = _table_geometries()[(backend, name)]
    A = ops.Operator(vol, pg, backend=backend)
    adjoint_error = ops.dot_test(A, dtype)
    x = torch.randn(2, *A.domain_shape, dtype=torch.float64, requires_grad=True)
    A(x).sum().backward()
    expected = A.T(torch.ones((2, *A.range_shape), dtype=torch.float64))
    scale = float(expected.abs().max())
    gradients = bool(torch.allclose(x.grad, expected, rtol=1e-5, atol=1e-5 * scale))
    A.T(A(torch.rand(1, *A.domain_shape)))  # set-up outside the measurement
    peaks = {}
    for batch in (1, 9):  # batch 9 after batch 1: memory freed by the smaller run is reused
        xb = torch.rand(batch, *A.domain_shape)
        before = _reset_peak()
        A.T(A(xb))
        peaks[batch] = _status_mib("VmHWM") - before
    return {
        "backend": backend,
        "geometry": name,
        "domain": list(A.domain_shape),
        "range": list(A.range_shape),
        "adjoint_error": adjoint_error,
        "dot_test_dtype": str(dtype).replace("torch.", ""),
        "gradients": gradients,
        "mib_per_sample": max(peaks[9] - peaks[1], 0.0) / 8,
        "state": _state(A),
        "input_mib_per_sample": np.prod(A.domain_shape) * 4 / 2**20,
    }


def _in_subprocess(args: list[str]) -> dict:
    """One cell in a fresh process whose allocations over 64 KiB are mmapped (glibc), so
    that freed memory leaves the resident set and its peak counts live memory only."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(
        [sys.executable, __file__, *args, "--one"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("raymarch", "sparse", "table"))
    parser.add_argument("cells", nargs="*", help="raymarch: NxVIEWSxDET; sparse: NxVIEWS")
    parser.add_argument("--geometry", choices=("parallel", "fan"), default="parallel")
    parser.add_argument("--budget", type=int, default=None, help="raymarch memory_budget, bytes")
    parser.add_argument("--cell", nargs=2, metavar=("BACKEND", "GEOMETRY"), help="table cell")
    parser.add_argument("--one", action="store_true", help="run one cell in this process")
    args = parser.parse_args(argv)
    if args.what == "table":
        if args.one:
            print(json.dumps(table_cell(*args.cell)), flush=True)
            return 0
        astra_ok = astra_available()
        rows = [
            _in_subprocess(["table", "--cell", backend, name])
            for backend, name in _table_geometries()
            if backend != "astra" or astra_ok
        ]
        print(
            "| backend | geometry | domain → range | adjoint error (dot test) | gradients "
            "| state | peak MiB per batch item (input MiB) |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['backend']} | {r['geometry']} | {tuple(r['domain'])} → {tuple(r['range'])} "
                f"| {r['adjoint_error']:.1e} ({r['dot_test_dtype']}) | "
                f"{'yes' if r['gradients'] else 'no'} | {r['state']} | {r['mib_per_sample']:.2f} "
                f"({r['input_mib_per_sample']:.2f}) |"
            )
        return 0
    for cell in args.cells:
        sizes = list(map(int, cell.split("x")))
        if not args.one:
            extra = ["--geometry", args.geometry]
            extra += [] if args.budget is None else ["--budget", str(args.budget)]
            print(json.dumps(_in_subprocess([args.what, cell, *extra])), flush=True)
        elif args.what == "raymarch":
            print(json.dumps(raymarch_cell(*sizes, args.budget)), flush=True)
        else:
            print(json.dumps(sparse_cell(*sizes, args.geometry)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
