"""``ctblend demo``: simulate sparse-view CT of a chest CT (or a volume), compare methods."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import common

HELP = "simulate 8-view CT of a real chest CT (or --volume) and compare methods"
DESCRIPTION = (
    "Simulate sparse-view CT of the shipped real chest-CT excerpt (or --volume, "
    "--phantom), reconstruct with FBP, SIRT, TV, FBP-UNet and DiffusionBlend++ (when shipped), "
    "print PSNR/SSIM and write a figure and an HDF5 file."
)
PRIOR_HELP = (
    "DiffusionBlend++ checkpoint (default: the shipped ctblend/weights/blendpp_cpu128 if installed)"
)


def add_arguments(p) -> None:
    """The options of ``ctblend demo``: the input volume, the methods and their settings, the
    output folder."""
    p.add_argument(
        "--volume",
        metavar="PATH",
        help="a DICOM folder or volume file (default: the shipped chest-CT excerpt)",
    )
    p.add_argument(
        "--phantom", action="store_true", help="use the procedural phantom instead of real CT"
    )
    p.add_argument(
        "--slices",
        type=common.slice_range,
        metavar="A:B",
        help="z range of --volume (default: the middle --n-slices slices)",
    )
    p.add_argument(
        "--spacing",
        type=common.spacing,
        metavar="DZ,DY,DX",
        help="voxel size in mm of a --volume that does not record it (.npy)",
    )
    p.add_argument(
        "--n-slices",
        type=common.positive_int,
        metavar="N",
        help="slices (default 32; 9 with --quick)",
    )
    p.add_argument(
        "--nfe", type=common.positive_int, help="diffusion steps (default 50; 10 with --quick)"
    )
    p.add_argument(
        "--samples",
        type=common.positive_int,
        default=1,
        help="posterior samples per diffusion method (mean shown, std row beside it)",
    )
    p.add_argument("--quick", action="store_true", help="a shortened run (CI): 9 slices, 10 steps")
    common.add_precision(p)
    p.add_argument("--prior", metavar="PATH", help=PRIOR_HELP)
    p.add_argument("--protocol", default="svct8", help="measurement protocol (default svct8)")
    p.add_argument(
        "--size", type=common.scale, default="cpu128", help="in-plane size (default cpu128 = 128)"
    )
    p.add_argument(
        "--methods", help="comma-separated subset of fbp,sirt,tv,fbp-unet,dds,diffusionblend++"
    )
    p.add_argument(
        "--out",
        default="ctblend_demo",
        metavar="DIR",
        help="output folder (default ./ctblend_demo)",
    )
    common.add_common(p)


def run(args: argparse.Namespace) -> int:
    from ctblend.io.output import check_writable, single_writer

    if args.volume and args.phantom:
        raise ValueError(f"--volume {args.volume} and --phantom both given; expected one")
    if args.volume and not Path(args.volume).exists():
        raise FileNotFoundError(f"--volume {args.volume}: no such file or folder")
    check_writable(args.out)
    from ctblend.demo import DEMO_METHODS

    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else DEMO_METHODS
    _check_options(args, methods)
    start = time.perf_counter()
    with single_writer(args.out):
        _run(args, methods)
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0


def _check_options(args: argparse.Namespace, methods: tuple[str, ...]) -> None:
    """The options' bounds, before any volume or network is loaded: the size, and the diffusion
    methods' configs (their own bounds) with ``--nfe`` / ``--samples``."""
    from ctblend.pipeline import PRIOR_OF_METHOD, method_config

    common.check_scale(args.size)
    options = {"samples": args.samples, **({} if args.nfe is None else {"nfe": args.nfe})}
    for method in methods:
        if method in PRIOR_OF_METHOD:
            method_config(method, options)


def _run(args: argparse.Namespace, methods: tuple[str, ...]) -> None:
    """``run_demo`` with the options of ``args``."""
    from ctblend.demo import run_demo

    run_demo(
        args.volume,
        args.out,
        phantom=args.phantom,
        nfe=args.nfe,
        n_slices=args.n_slices,
        size=args.size,
        seed=args.seed or 0,
        samples=args.samples,
        quick=args.quick,
        slices=args.slices,
        spacing_mm=args.spacing,
        protocol=args.protocol,
        prior=args.prior,
        methods=methods,
        device=args.device or "auto",
        precision=args.precision,
        progress=common.progress(args),
    )
