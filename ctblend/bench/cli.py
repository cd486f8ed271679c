"""``ctblend bench`` / ``python -m ctblend.bench`` options."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from ctblend.bench.config import ABLATIONS, BENCH_METHODS, BENCH_PROTOCOLS, QUICK, BenchConfig
from ctblend.bench.runner import run_bench

log = logging.getLogger("ctblend.bench")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ctblend bench``."""
    add = parser.add_argument
    add("--out", default="bench", help="results folder (resumed when it holds cells)")
    add("--volumes", nargs="+", help="files, folders, MANIFEST roles (test, ood) or phantom[:Z]")
    add("--ct-dir", help="CT folder with MANIFEST.md (for roles and volume names)")
    add("--protocols", nargs="+", help=f"default {' '.join(BENCH_PROTOCOLS)}; '+noise' variants")
    add("--with-noise", action="store_true", help="add the +noise variant of every protocol")
    add("--methods", nargs="+", choices=BENCH_METHODS, help="default: all")
    add(
        "--ablations",
        nargs="*",
        choices=tuple(ABLATIONS),
        help="diffusionblend++ ablations (no names: all)",
    )
    add("--scale", help="cpu128 (default), paper256 or an in-plane size")
    add("--z-range", nargs=2, type=int, metavar=("START", "STOP"), help="slices START:STOP only")
    add("--seeds", nargs="+", type=int, help="seeds (noise and sampling), default 0")
    add("--nfe", type=int, help="NFE of every diffusion method (default 200, DDS 100)")
    add("--samples", type=int, help="posterior samples per diffusion cell (default 1)")
    add("--sirt-iterations", type=int)
    add("--tv-iterations", type=int)
    add("--tv-lam", type=float)
    add("--prior-blendpp", help="DiffusionBlend++ prior folder")
    add("--prior-blend", help="DiffusionBlend prior folder")
    add("--prior-slice2d", help="2D prior folder (dds, dds2d)")
    add("--fbp-unet", help="folder with one FBP-UNet folder per protocol")
    add("--geometry", help="geometry YAML (2D or 3D: docs/geometries/) instead of protocols")
    add("--spacing", nargs=3, type=float, metavar=("DZ", "DY", "DX"), help="for .npy volumes")
    add("--device", help="cpu (default), cuda or auto")
    add(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        help="diffusion networks (default auto: bf16 where native, else fp32)",
    )
    add("--threads", type=int, help="torch CPU threads")
    add("--no-volumes", action="store_true", help="do not store reconstructions (no panels)")
    add("--quick", action="store_true", help="tiny CI run: phantom at 32², few iterations")
    add("--quiet", action="store_true", help="no per-cell progress lines on stderr")
    add("--config", help="BenchConfig YAML; command-line options override it")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The BenchConfig of parsed arguments (``--quick`` supplies tiny defaults)."""
    base = BenchConfig.from_yaml(args.config) if args.config else BenchConfig()
    values = base.to_dict()
    if args.quick:
        values.update(QUICK)
    given = {
        "out_dir": args.out,
        "volumes": args.volumes,
        "ct_dir": args.ct_dir,
        "protocols": args.protocols,
        "methods": args.methods,
        "ablations": (list(ABLATIONS) if args.ablations == [] else args.ablations),
        "scale": (int(args.scale) if args.scale and args.scale.isdigit() else args.scale),
        "z_range": args.z_range,
        "seeds": args.seeds,
        "nfe": args.nfe,
        "samples": args.samples,
        "sirt_iterations": args.sirt_iterations,
        "tv_iterations": args.tv_iterations,
        "tv_lam": args.tv_lam,
        "prior_blendpp": args.prior_blendpp,
        "prior_blend": args.prior_blend,
        "prior_slice2d": args.prior_slice2d,
        "fbp_unet": args.fbp_unet,
        "geometry": args.geometry,
        "spacing_mm": args.spacing,
        "device": args.device,
        "precision": args.precision,
    }
    values.update({k: v for k, v in given.items() if v is not None})
    if args.no_volumes:
        values["save_volumes"] = False
    if args.with_noise:
        names = [p for p in values["protocols"] if not p.endswith("+noise")]
        values["protocols"] = [*values["protocols"], *(f"{p}+noise" for p in names)]
    return BenchConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    """``ctblend bench``: run, print where the tables are; 1 if any cell failed."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    config = config_from_args(args)
    if not args.quiet and not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    rows = run_bench(config)
    out = Path(config.out_dir)
    done = sum(r["status"] == "done" for r in rows)
    skipped = [r for r in rows if str(r["status"]).startswith("skipped")]
    failed = [r for r in rows if str(r["status"]).startswith("failed")]
    print(f"{len(rows)} cells: {done} done, {len(skipped)} skipped, {len(failed)} failed")
    for row in skipped + failed:
        cell = " ".join(str(row[k]) for k in ("volume", "protocol", "method", "ablation"))
        print(f"  {cell}: {row['status']}")
    print(f"tables: {out / 'results.md'}, {out / 'results.csv'}, {out / 'results.json'}")
    return 1 if failed else 0
