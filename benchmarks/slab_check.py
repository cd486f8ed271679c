"""Which prior ships: reconstructions of the validation slab (issue 22's rule).

The slab is the top ``--holdout`` fraction (10 %) of every MANIFEST train volume — the slices no
training step of a ``holdout: 0.1`` run reads. For each candidate (a label and the folders of its
``blend++`` and ``slice2d`` priors) this runs DiffusionBlend++ and DDS at ``--protocol`` (svct8)
and ``--nfe`` (50) on every slab with at least ``--min-slices`` slices and writes one JSON and one
Markdown table (per-plane PSNR over every slice and inside the body, and their means over the
slabs). The test and out-of-distribution volumes are never read.

    python benchmarks/slab_check.py --data ../shared/data/ct --out runs/slab \\
        --candidate shipped ctblend/weights/blendpp_cpu128 ctblend/weights/slice2d_cpu128 \\
        --candidate stage4 runs/blendpp_stage4 runs/slice2d_stage4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np

from ctblend.bench.records import json_safe
from ctblend.data.splits import manifest_split
from ctblend.geometry_config import Acquisition
from ctblend.io.output import write_text
from ctblend.metrics import PLANES
from ctblend.pipeline.run import run_method, simulate_case
from ctblend.pipeline.volumes import load_volume
from ctblend.priors.loading import load_prior

METHODS = {"diffusionblend++": "blend++", "dds": "slice2d"}


def slabs(data: Path, holdout: float, min_slices: int) -> list[tuple[Path, tuple[int, int]]]:
    """(train volume, its slab [a, b)) for every train volume whose slab has enough slices; the
    cut is the datasets' ``z_range`` (1 − holdout, 1) rounded as they round it."""
    out = []
    for path in manifest_split(data)["train"]:
        with h5py.File(path, "r") as f:
            depth = f["hu"].shape[0]
        start = round((1.0 - holdout) * depth)
        if depth - start >= min_slices:
            out.append((path, (start, depth)))
    return out


def score_line(scores: dict) -> str:
    """``a / c / s (body a / c / s)`` of one cell."""
    every = " / ".join(f"{scores[f'{p}_psnr']:.2f}" for p in PLANES)
    body = " / ".join(f"{scores[f'{p}_psnr_body']:.2f}" for p in PLANES)
    return f"{every} (body {body})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="CT folder with MANIFEST.md")
    p.add_argument("--out", type=Path, required=True, help="folder for slab.json and slab.md")
    p.add_argument(
        "--candidate",
        nargs=3,
        action="append",
        required=True,
        metavar=("LABEL", "BLENDPP", "SLICE2D"),
        help="a label and its blend++ and slice2d prior folders (repeatable)",
    )
    p.add_argument("--protocol", default="svct8")
    p.add_argument("--nfe", type=int, default=50)
    p.add_argument("--holdout", type=float, default=0.1)
    p.add_argument("--min-slices", type=int, default=9, help="slabs thinner than this are skipped")
    p.add_argument("--only", nargs="+", metavar="NAME", help="these train volumes only (stems)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    args = p.parse_args()
    acquisition = Acquisition(protocol=args.protocol)
    results: dict[str, dict] = {}
    for path, (a, b) in slabs(args.data, args.holdout, args.min_slices):
        if args.only and path.stem not in args.only:
            continue
        case = simulate_case(load_volume(path, "cpu128", (a, b)), acquisition, seed=0)
        for label, *folders in args.candidate:
            for (method, kind), folder in zip(METHODS.items(), folders, strict=True):
                prior = load_prior(folder, kind=kind, image_size=128, precision=args.precision)
                outcome = run_method(case, method, prior, {"nfe": args.nfe, "seed": 0})
                key = f"{label} {method}"
                results.setdefault(key, {})[f"{path.stem} {a}:{b}"] = outcome.scores
                print(f"{path.stem} {a}:{b} {key}: {score_line(outcome.scores)}", flush=True)
    lines = [
        f"# Validation slab, {args.protocol}, {args.nfe} NFE, seed 0",
        "",
        "PSNR axial / coronal / sagittal over every slice (inside the body in brackets).",
        "",
        "| candidate | " + " | ".join(next(iter(results.values()))) + " | mean |",
        "|---" * (len(next(iter(results.values()))) + 2) + "|",
    ]
    for key, cells in results.items():
        mean = {
            k: float(np.mean([c[k] for c in cells.values()])) for k in next(iter(cells.values()))
        }
        row = [score_line(c) for c in cells.values()] + [score_line(mean)]
        lines.append(f"| {key} | " + " | ".join(row) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "slab.json", json.dumps(json_safe(results), indent=1) + "\n")
    write_text(args.out / "slab.md", "\n".join(lines) + "\n")
    print(f"wrote {args.out / 'slab.md'}")


if __name__ == "__main__":
    main()
