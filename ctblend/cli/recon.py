"""``ctblend recon``: reconstruct a sinogram file or a volume + protocol → HDF5 + PNG.

``--inputs DIR`` under ``torchrun --nproc_per_node N -m ctblend recon …`` gives every rank the
inputs ``rank, rank + N, …`` (no process group is needed); existing outputs are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from . import common

HELP = "reconstruct a sinogram file or a volume + protocol → HDF5 + PNG"
DESCRIPTION = (
    "Reconstruct measurements (a file from 'ctblend simulate', or a volume with "
    "--protocol/--geometry) with one method. Writes dataset 'recon' with the method, config, "
    "seed, timings and (when the truth is known) metrics as attributes, and a PNG. "
    "With --inputs DIR every entry of DIR is reconstructed; under torchrun the entries are "
    "shared among the processes. Existing outputs are skipped."
)
EPILOG = (
    "KEY=VALUE items set method options, e.g. nfe=100 eta=0.85 cg_iters=5 "
    "partition=adjacency (diffusion methods), iterations=300 (sirt, tv), lam=0.02 (tv), "
    "filter=hann (fbp, fdk), short_scan=true (fdk), clip_x0=false (diffusion methods)."
)


def add_arguments(p) -> None:
    """The options of ``ctblend recon``."""
    p.add_argument(
        "items",
        nargs="*",
        metavar="INPUT | KEY=VALUE",
        help="the input file/folder and method options",
    )
    p.add_argument("--inputs", metavar="DIR", help="reconstruct every volume or sinogram in DIR")
    p.add_argument(
        "--method",
        default="fbp",
        help="fbp (default; FDK on a circular cone beam), fdk, fbp-unet (2D), sirt, tv, dds, "
        "dds2d, diffusionblend, diffusionblend++",
    )
    p.add_argument(
        "--prior",
        metavar="PATH",
        help="checkpoint folder or shipped network name (default: the shipped DiffusionBlend++ "
        "prior; for fbp-unet the shipped network of the protocol)",
    )
    p.add_argument("--nfe", type=common.positive_int, help="diffusion steps (default 200; dds 100)")
    p.add_argument(
        "--samples",
        type=common.positive_int,
        help="posterior samples K (diffusion methods): recon = their mean, std beside it",
    )
    common.add_precision(p)
    p.add_argument("--overwrite", action="store_true", help="recompute existing outputs")
    p.add_argument(
        "--out",
        metavar="PATH",
        help="output file (default <input>_<method>.h5), or "
        "folder with --inputs (default <DIR>_<method>)",
    )
    common.add_acquisition(p, default=None)
    common.add_common(p)
    p.set_defaults(options=None)


def _method_config(method: str, overrides: dict, args: argparse.Namespace):
    """The validated config of ``method`` from ``KEY=VALUE`` items, ``--nfe`` and ``--seed``."""
    from ctblend.pipeline import PRIOR_OF_METHOD, method_config

    options = dict(overrides)
    if args.nfe is not None:
        options["nfe"] = args.nfe
    if args.samples is not None:
        options["samples"] = args.samples
    if method in PRIOR_OF_METHOD and args.seed is not None:
        options.setdefault("seed", args.seed)
    return method_config(method, options)


def _batch_entries(folder: Path) -> list[Path]:
    from ctblend.io.volume import VOLUME_SUFFIXES

    if not folder.is_dir():
        raise FileNotFoundError(f"--inputs {folder}: not a folder")
    entries = [
        p
        for p in sorted(folder.iterdir())
        if not p.name.startswith(".") and (p.is_dir() or p.name.lower().endswith(VOLUME_SUFFIXES))
    ]
    if not entries:
        raise ValueError(
            f"--inputs {folder}: no volumes or measurement files (expected .h5, .nii(.gz), "
            ".npy/.npz files or DICOM series folders)"
        )
    return entries


def _jobs(paths: list[str], method: str, args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(input, output) pairs of ``--inputs DIR`` or of the one input."""
    from ctblend.io.output import check_writable
    from ctblend.io.volume import volume_stem

    if args.inputs:
        if paths:
            raise ValueError(f"both --inputs and an input ({paths[0]}) given; expected one")
        entries = _batch_entries(Path(args.inputs))
        folder = Path(args.out or f"{Path(args.inputs).name}_{method}")
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--out {folder}: exists and is not a folder")
        check_writable(folder)
        return [(e, folder / f"{volume_stem(e)}_{method}.h5") for e in entries]
    if len(paths) != 1:
        raise ValueError(
            f"expected one input (a measurement file or a volume), got {len(paths)}: "
            f"{' '.join(paths) or 'none'}; for many, use --inputs DIR"
        )
    source = Path(paths[0])
    if not source.exists() and paths[0] != "phantom":
        raise FileNotFoundError(f"{source}: no such file or folder")
    return [(source, common.check_output(Path(args.out or f"{volume_stem(source)}_{method}.h5")))]


def _network_target(jobs: list[tuple[Path, Path]], kinds: dict, args, acquisition):
    """(protocol, slice size) the network must fit: of the acquisition, else of the first
    measurement file."""
    from ctblend.data.scaling import scale_size
    from ctblend.pipeline.recon import recorded_acquisition

    if acquisition is not None:
        return acquisition.protocol, scale_size(args.scale)
    first = next((source for source, _ in jobs if kinds[source] is None), None)
    return recorded_acquisition(first) if first is not None else (None, scale_size(args.scale))


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ctblend.io.output import single_writer

    paths, overrides = common.split_items(args.items)
    method = args.method
    jobs = _jobs(paths, method, args)
    acquisition = common.acquisition(args, required=False)
    config = _method_config(method, {**(args.options or {}), **overrides}, args)
    common.check_scale(args.scale)
    from ctblend.pipeline.recon import ReconInput, input_kind, load_case, reconstruct_file
    from ctblend.pipeline.weights import load_network
    from ctblend.runtime import resolve_device

    kinds: dict[Path, str | None | ValueError] = {}
    for source, _ in jobs:
        try:
            kinds[source] = input_kind(source)
        except ValueError as exc:  # one bad entry of a batch fails alone, below
            if len(jobs) == 1:
                raise
            kinds[source] = exc
    for source, kind in kinds.items():
        if isinstance(kind, str) and acquisition is None:
            raise ValueError(
                f"{source} is a volume ({kind}), not measurements: give --protocol or "
                "--geometry to simulate its measurements (or pass a file written by "
                "`ctblend simulate`)"
            )
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    mine = jobs[rank::world]
    tag = f"[rank {rank}/{world}] " if world > 1 else ""
    if not mine:
        print(f"{tag}nothing to do ({len(jobs)} inputs for {world} processes)")
        return 0
    with contextlib.ExitStack() as held:
        if len(jobs) == 1:  # a second writer of this output fails here, before any loading
            held.enter_context(single_writer(mine[0][1]))
        device = resolve_device(args.device)
        protocol, size = _network_target(mine, kinds, args, acquisition)
        prior, prior_path = load_network(
            method,
            args.prior,
            device,
            args.precision,
            protocol=protocol,
            size=size,
            nfe=getattr(config, "nfe", None),
        )
        how = ReconInput(
            acquisition, args.scale, args.slices, args.phantom_slices, args.seed or 0, args.spacing
        )
        failures = 0
        show = common.progress(args)
        for source, out in tqdm(mine, desc="volumes", disable=not show or len(mine) < 2):
            start = time.perf_counter()
            try:
                with single_writer(out) if len(jobs) > 1 else contextlib.nullcontext():
                    if out.exists() and not args.overwrite:
                        tqdm.write(f"{tag}skip {out} (exists; --overwrite recomputes it)")
                        continue
                    if isinstance(kinds[source], ValueError):
                        raise kinds[source]
                    case = load_case(source, kinds[source] is None, how, device)
                    metrics = reconstruct_file(
                        source, case, out, method, config, prior, prior_path,
                        seed=how.seed, device=device, progress=show,
                    )  # fmt: skip
            except (ValueError, FileNotFoundError) as exc:
                if len(jobs) == 1:
                    raise
                failures += 1
                tqdm.write(f"ctblend: error: {common.about(source, exc)}", file=sys.stderr)
                continue
            score = ""
            if metrics:
                score = (
                    f", axial PSNR {metrics['axial_psnr']:.2f} dB, SSIM "
                    f"{metrics['axial_ssim']:.3f}, volume PSNR {metrics['volume_psnr']:.2f} dB"
                )
            tqdm.write(f"{tag}wrote {out} ({time.perf_counter() - start:.1f} s{score})")
    if failures:
        raise ValueError(f"{tag}{failures} of {len(mine)} inputs failed (see the lines above)")
    return 0
