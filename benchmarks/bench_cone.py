"""Cone-beam FP and BP: ours (``joseph``, the 3D default, and ``raymarch``) against RTK's CPU
Joseph projector (``itk-rtk``), same geometry and thread count; writes docs/benchmarks/cone.*

Each (method, size, views, threads) cell runs in a fresh subprocess, so its peak resident memory
is its own; ``--rounds`` runs every cell that many times, the cells of a round one after another
(ours next to RTK's), so that each ratio compares runs made under the same load; the table gives
medians over rounds. RTK columns are skipped, with the reason printed and written, where
``itk-rtk`` is absent.

    python benchmarks/bench_cone.py            # 64³ and 100 × 128² × 180/360 views, 3 rounds
    python benchmarks/bench_cone.py --quick    # tiny sizes, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path

import numpy as np
import torch

import operators as ops
from ctblend.runtime import describe_machine, machine_info

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"


def problem(size: str, views: int) -> tuple[ops.VolumeGeometry, ops.ConeGeometry]:
    """``64``: 64³ voxels of 1 mm, source 128 mm and detector 64 mm from the axis
    (magnification 1.5), 64 × 96 pixels of 1.5 mm. ``128``: 100 × 128² voxels of 1 mm, source
    256 mm and detector 128 mm from the axis, 160 × 192 pixels of 1.5 mm. ``tiny``: 16³."""
    if size == "64":
        return ops.volume((64, 64, 64)), ops.cone(views, (64, 96), 1.5, 128.0, 64.0)
    if size == "128":
        return ops.volume((100, 128, 128)), ops.cone(views, (160, 192), 1.5, 256.0, 128.0)
    return ops.volume((16, 16, 16)), ops.cone(views, (16, 24), 1.5, 32.0, 16.0)


def _best(f, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``f``, in seconds."""
    return min(timeit.repeat(f, number=1, repeat=repeats))


def run_one(method: str, size: str, views: int, threads: int, repeats: int) -> dict:
    """Seconds per FP and per BP (best of ``repeats`` after a warm-up), set-up seconds, the
    first FP (joseph: with its rays' set-up, kept for later calls) and peak RSS of one cell, in
    this process."""
    torch.set_num_threads(threads)
    load_average = os.getloadavg()[0]  # the machine's other work as the cell starts
    vol, pg = problem(size, views)
    x = np.random.default_rng(0).random(vol.shape, dtype=np.float32)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if method == "rtk":
        from operators import rtk

        start = time.perf_counter()
        rtk.set_threads(threads)
        rtk.geometry(problem("tiny", 1)[1])  # loads ITK's and RTK's wrappers (lazy imports)
        load = time.perf_counter() - start
        start = time.perf_counter()
        rtk.geometry(pg)
        setup = time.perf_counter() - start
        start = time.perf_counter()
        y = rtk.forward_project(x, vol, pg)
        first = time.perf_counter() - start

        def forward():
            return rtk.forward_project(x, vol, pg)

        def backward():
            return rtk.back_project(y, vol, pg)
    else:
        load = 0.0  # torch and operators are imported with this script
        start = time.perf_counter()
        A = ops.Operator(vol, pg, backend=method)
        setup = time.perf_counter() - start
        xt = torch.from_numpy(x)
        start = time.perf_counter()
        y = A(xt)
        first = time.perf_counter() - start

        def forward():
            return A(xt)

        def backward():
            return A.T(y)

    backward()  # warm-up (forward's was above)
    return {
        "method": method,
        "size": size,
        "views": views,
        "threads": threads,
        "fp_seconds": _best(forward, repeats),
        "bp_seconds": _best(backward, repeats),
        "setup_seconds": setup,
        "first_fp_seconds": first,
        "load_seconds": load,
        "rss_before_mib": rss_before,
        "load_average": load_average,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def rtk_missing() -> str | None:
    """Why RTK cannot run here, or None."""
    try:
        from operators import rtk

        rtk._itk()
    except (ImportError, AttributeError) as e:
        return f"itk-rtk is not installed ({e}); pip install '.[rtk]'"
    return None


def cells(quick: bool, with_rtk: bool, with_raymarch: bool) -> list[tuple[str, str, int, int]]:
    """(method, size, views, threads) of every cell."""
    ours = ["joseph", "raymarch"] if with_raymarch else ["joseph"]
    methods = ours + (["rtk"] if with_rtk else [])
    if quick:
        return [(m, "tiny", 12, 1) for m in methods]
    out = [(m, "64", 180, t) for t in (1, 2) for m in methods]
    big = [m for m in methods if m != "raymarch"]
    out += [(m, "64", 360, 1) for m in big]
    out += [(m, "128", v, 1) for v in (180, 360) for m in big]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", nargs=4, metavar=("METHOD", "SIZE", "VIEWS", "THREADS"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-raymarch", action="store_true", help="skip the slow raymarch cell")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    if args.one:
        method, size, views, threads = args.one
        print(json.dumps(run_one(method, size, int(views), int(threads), args.repeats)))
        return 0
    missing = rtk_missing()
    if missing:
        print(f"RTK columns skipped: {missing}", flush=True)
    results = []
    for round_ in range(args.rounds):
        for method, size, views, threads in cells(
            args.quick, missing is None, not args.no_raymarch
        ):
            cmd = [sys.executable, __file__, "--one", method, size, str(views), str(threads)]
            cmd += ["--repeats", str(args.repeats)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results.append({**json.loads(out.strip().splitlines()[-1]), "round": round_})
            print(results[-1], flush=True)
    write(results, args.out, quick=args.quick, rtk_skipped=missing)
    return 0


def _rtk_version() -> str:
    try:
        from operators import rtk

        return rtk.version()
    except Exception:  # noqa: BLE001 - only for the report line
        return "absent"


def _cell(r: dict) -> tuple:
    return (r["size"], r["views"], r["threads"])


def summary(results: list[dict]) -> list[dict]:
    """One row per (method, cell): medians over rounds of the times, load and RSS, and the
    median over rounds of each round's ratio to RTK's run of that round (None without RTK)."""
    rows = []
    for key in dict.fromkeys((r["method"], *_cell(r)) for r in results):
        runs = [r for r in results if (r["method"], *_cell(r)) == key]
        row = {
            k: statistics.median(r[k] for r in runs)
            for k in runs[0]
            if k.endswith(("_seconds", "_mib", "load_average"))
        }
        row.update(method=key[0], size=key[1], views=key[2], threads=key[3], rounds=len(runs))
        for what in ("fp", "bp"):
            ratios = [
                r[f"{what}_seconds"] / peer[f"{what}_seconds"]
                for r in runs
                for peer in results
                if peer["method"] == "rtk"
                and _cell(peer) == _cell(r)
                and peer.get("round") == r.get("round")
            ]
            row[f"{what}_ratio"] = statistics.median(ratios) if ratios else None
        rows.append(row)
    return rows


def write(results: list[dict], out: Path, quick: bool, rtk_skipped: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    name = "cone_quick" if quick else "cone"
    info = machine_info()
    info["torch_threads"] = "per cell"
    rows = summary(results)
    loads = [r["load_average"] for r in results]
    lines = [
        "# Cone beam: FP and BP, ours against RTK's CPU Joseph projector",
        "",
        f"Machine: {describe_machine(info)}; itk-rtk {_rtk_version()}. Command: "
        f"`OMP_NUM_THREADS=1 python benchmarks/bench_cone.py{' --quick' if quick else ''}`. "
        "float32, batch 1; per run the best of repeated calls after a warm-up; every cell ran "
        f"{max(r['round'] for r in results) + 1} times, the cells of a round one after "
        "another (ours next to RTK's), and the table gives medians over the rounds; a ratio "
        "is the median of each round's ours/RTK, both measured under that round's load. "
        "Threads: torch and ITK both set to the cell's count. Set-up: building the Operator "
        "(ours), the RTK geometry (RTK; its filters are made per call and timed with it); "
        "'+ load' is RTK's first use of ITK's lazily imported wrappers, once per process. "
        "'first FP' is the first call: for joseph it includes sorting the rays into windows, "
        "kept for later calls within the memory budget. 'load' is the 1-minute load average "
        f"as the cell started (this run: {min(loads):.1f}–{max(loads):.1f} on "
        f"{info['cpu_count']} CPUs: other jobs shared the cores, so absolute times are "
        "pessimistic and an idle rerun is due). Peak RSS is the whole fresh process (Python, "
        "torch, ITK when loaded, data); 'before' is after imports, before the cell.",
        "",
    ]
    if rtk_skipped:
        lines += [f"RTK columns skipped: {rtk_skipped}.", ""]
    lines += [
        "| volume (Z, H, W) | views | detector | threads | method | FP s | BP s | FP ours/RTK "
        "| BP ours/RTK | set-up s | first FP s | peak RSS MiB (before) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vol, pg = problem(r["size"], r["views"])
        fp = f"{r['fp_ratio']:.2f}×" if r["fp_ratio"] is not None else "–"
        bp = f"{r['bp_ratio']:.2f}×" if r["bp_ratio"] is not None else "–"
        load = f" + {r['load_seconds']:.1f} load" if r["load_seconds"] else ""
        lines.append(
            f"| {vol.shape} | {r['views']} | {pg.det_shape} | {r['threads']} | {r['method']} | "
            f"{r['fp_seconds']:.3f} | {r['bp_seconds']:.3f} | {fp} | {bp} | "
            f"{r['setup_seconds']:.2f}{load} | {r['first_fp_seconds']:.3f} | "
            f"{r['peak_rss_mib']:.0f} ({r['rss_before_mib']:.0f}) | {r['load_average']:.1f} |"
        )
    lines += [
        "",
        "Targets (issue #27): at 64³ × 180 views on one thread FP and BP ratio ≤ 1.0 and peak "
        "RSS − RSS before ≤ 150 MiB (idle machine).",
    ]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}.json").write_text(
        json.dumps({"machine": machine_info(), "summary": rows, "results": results}, indent=1)
    )
    print(f"wrote {out / (name + '.md')}")


if __name__ == "__main__":
    raise SystemExit(main())
