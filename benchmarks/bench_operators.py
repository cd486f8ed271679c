"""FP+BP throughput of the 2D projectors on a batch of slices; writes docs/benchmarks/operators.*

Peers, in one run: ``torch_sparse`` (ours), the ASTRA CPU per-slice loop (``backend="astra"``,
threaded over slices) and a rotation projector (bilinear ``grid_sample`` rotation + column sums,
the approach of the DiffusionBlend authors' code; parallel beam only). Each (method, geometry)
cell runs in a fresh subprocess so that its peak resident memory is its own, on ``--threads``
threads (torch's and the ASTRA loop's; default 1). Besides the batch, each cell times its
first ``A(x)`` (construction and, for ``torch_sparse``, the matrix build included) and FP+BP of
a single slice (B = 1).

    python benchmarks/bench_operators.py               # Z = 64 slices of 256², 8 and 180 views
    python benchmarks/bench_operators.py --quick       # tiny sizes, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import timeit
from pathlib import Path

import torch
import torch.nn.functional as F

import operators as ops
from ctblend.runtime import describe_machine, machine_info

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"


class RotationProjector:
    """Parallel-beam projector by image rotation: rotate by each angle, sum the columns."""

    def __init__(self, n: int, angles, det_count: int):
        self.n, self.det_count = n, det_count
        self.pad = (det_count - n) // 2
        size = n + 2 * self.pad
        theta = torch.tensor(angles, dtype=torch.float32)
        c, s = torch.cos(theta), torch.sin(theta)
        zeros = torch.zeros_like(c)
        rot = torch.stack([torch.stack([c, -s, zeros], 1), torch.stack([s, c, zeros], 1)], 1)
        self.grid = F.affine_grid(rot, (len(angles), 1, size, size), align_corners=False)
        inverse = rot.clone()
        inverse[:, 0, 1], inverse[:, 1, 0] = rot[:, 1, 0], rot[:, 0, 1]
        self.grid_back = F.affine_grid(inverse, (len(angles), 1, size, size), align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, N) → (B, V, det)``."""
        padded = F.pad(x, (self.pad,) * 4)
        out = []
        for v in range(self.grid.shape[0]):
            g = self.grid[v : v + 1].expand(x.shape[0], -1, -1, -1)
            out.append(F.grid_sample(padded[:, None], g, align_corners=False).sum(dim=2)[:, 0])
        return torch.stack(out, dim=1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Smear each view along the columns and rotate back (unfiltered backprojection)."""
        size = self.n + 2 * self.pad
        acc = torch.zeros(y.shape[0], 1, size, size)
        for v in range(self.grid_back.shape[0]):
            smear = y[:, v][:, None, None, :].expand(-1, 1, size, -1)
            g = self.grid_back[v : v + 1].expand(y.shape[0], -1, -1, -1)
            acc += F.grid_sample(smear, g, align_corners=False)
        p = self.pad
        return acc[:, 0, p : p + self.n, p : p + self.n]


def _geometry(kind: str, n: int, views: int):
    if kind == "parallel":
        return ops.parallel(views, 2 * n)
    return ops.fan_flat(views, 2 * n, 1.5, 2.0 * n, 1.0 * n)


def _best(f, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``f``, in seconds."""
    return min(timeit.repeat(f, number=1, repeat=repeats))


def run_one(method: str, kind: str, n: int, z: int, views: int, repeats: int, threads: int) -> dict:
    """Time FP+BP of ``z`` slices and of one; the first FP (with its set-up); peak RSS."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.rand(z, n, n)
    start = time.perf_counter()
    if method == "rotation":
        proj = RotationProjector(n, _geometry(kind, n, views).angles, 2 * n)
        forward, adjoint = proj.forward, proj.adjoint
    else:
        A = ops.Operator(ops.volume((n, n)), _geometry(kind, n, views), backend=method)
        forward, adjoint = A, A.T
        if method == "astra":
            A.backend.threads = threads
    setup = time.perf_counter() - start
    y = forward(x)
    first = time.perf_counter() - start
    adjoint(y)  # warm-up
    one = x[:1].clone()
    return {
        "method": method,
        "geometry": kind,
        "n": n,
        "slices": z,
        "views": views,
        "threads": threads,
        "seconds": _best(lambda: adjoint(forward(x)), repeats),
        "b1_seconds": _best(lambda: adjoint(forward(one)), 3 * repeats),
        "setup_seconds": setup,
        "first_fp_seconds": first,
        "load_average": os.getloadavg()[0],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", nargs=4, metavar=("METHOD", "GEOMETRY", "VIEWS", "N_Z"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    if args.one:
        method, kind, views, nz = args.one
        n, z = map(int, nz.split("x"))
        print(json.dumps(run_one(method, kind, n, z, int(views), args.repeats, args.threads)))
        return 0
    n, z, view_counts = (64, 8, (8, 30)) if args.quick else (256, 64, (8, 180))
    try:
        import astra  # noqa: F401

        peers = ["torch_sparse", "astra", "rotation"]
    except ImportError:
        peers = ["torch_sparse", "rotation"]
    results = []
    for kind in ("parallel", "fan"):
        for views in view_counts:
            for method in peers:
                if method == "rotation" and kind == "fan":
                    continue
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    method,
                    kind,
                    str(views),
                    f"{n}x{z}",
                    "--repeats",
                    str(args.repeats),
                    "--threads",
                    str(args.threads),
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                results.append(json.loads(out.strip().splitlines()[-1]))
                print(results[-1], flush=True)
    write(results, args.out, n, z, quick=args.quick, threads=args.threads)
    return 0


def write(results: list[dict], out: Path, n: int, z: int, quick: bool, threads: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    name = "operators_quick" if quick else "operators"
    info = machine_info()
    info["torch_threads"] = threads
    loads = [r["load_average"] for r in results]
    lines = [
        f"# Operator throughput: FP + BP of {z} slices of {n}²",
        "",
        f"Machine: {describe_machine(info)}. Command: `OMP_NUM_THREADS={threads} python "
        f"benchmarks/bench_operators.py{' --quick' if quick else ''}`; {threads} thread(s) for "
        "torch and the ASTRA loop. Best of repeated runs; 'first A(x)' is construction plus "
        "the first FP of the batch in a fresh process (the torch_sparse matrix build included; "
        "its transpose is made at the first A.T); 'B = 1' is FP+BP of a single slice. Peak RSS "
        "is the whole process (Python + torch + data) in a fresh subprocess per cell. Load "
        f"average during the run: {min(loads):.1f}–{max(loads):.1f} on {info['cpu_count']} "
        "CPUs (other jobs shared the cores; ratios are of cells run one after another).",
        "",
        "| geometry | views | method | FP+BP s | slices/s | torch_sparse speed-up | B = 1 ms "
        "| B = 1 speed-up | first A(x) s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ours = next(
            o
            for o in results
            if o["method"] == "torch_sparse"
            and o["geometry"] == r["geometry"]
            and o["views"] == r["views"]
        )
        r["torch_sparse_speedup"] = r["seconds"] / ours["seconds"]
        r["b1_speedup"] = r["b1_seconds"] / ours["b1_seconds"]
        lines.append(
            f"| {r['geometry']} | {r['views']} | {r['method']} | {r['seconds']:.3f} | "
            f"{r['slices'] / r['seconds']:.1f} | {r['torch_sparse_speedup']:.1f}× | "
            f"{1000 * r['b1_seconds']:.1f} | {r['b1_speedup']:.1f}× | "
            f"{r['first_fp_seconds']:.2f} | {r['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        "Targets: torch_sparse ≥ 5× the ASTRA loop and ≥ 20× the rotation projector; first "
        "A(x) at 256² × 180 views ≤ 1.5 s (target 1 s, issue #27).",
    ]
    path = out / f"{name}.md"
    kept = path.read_text().split("\n## ", 1)[1:] if path.is_file() else []  # later sections
    path.write_text("\n".join(lines) + "\n" + "".join(f"\n## {k}" for k in kept))
    (out / f"{name}.json").write_text(json.dumps({"machine": info, "results": results}, indent=1))
    print(f"wrote {out / (name + '.md')}")


if __name__ == "__main__":
    raise SystemExit(main())
