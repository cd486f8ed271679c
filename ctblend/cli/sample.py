"""``ctblend sample``: draw an unconditional volume from a prior."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import common

HELP = "draw an unconditional volume from a prior"
DESCRIPTION = (
    "Sample a (Z, H, W) volume from a prior by DDIM, blending its partitions. "
    "Writes dataset 'hu' (readable by ctblend's volume readers) and a PNG."
)


def add_arguments(p) -> None:
    """The options of ``ctblend sample``."""
    p.add_argument("--prior", metavar="PATH", help="checkpoint (default: the shipped prior)")
    p.add_argument(
        "--n-slices", type=common.positive_int, default=27, metavar="N", help="slices (default 27)"
    )
    p.add_argument("--nfe", type=common.positive_int, default=100, help="DDIM steps (default 100)")
    p.add_argument(
        "--eta", type=common.unit_interval, default=0.0, help="DDIM η in [0, 1] (default 0)"
    )
    p.add_argument(
        "--spacing",
        type=common.spacing,
        default=(1.0, 1.0, 1.0),
        metavar="DZ,DY,DX",
        help="voxel size written to the file (mm; default 1,1,1)",
    )
    common.add_precision(p)
    p.add_argument(
        "--out", default="sample.h5", metavar="FILE.h5", help="output (default sample.h5)"
    )
    common.add_common(p)


class _CountingPrior:
    """A VolumePrior that advances a progress bar at every ε evaluation."""

    def __init__(self, prior, bar):
        self.prior, self.bar = prior, bar
        self.kind, self.image_size = prior.kind, prior.image_size
        self.schedule = prior.schedule

    def eps(self, x_t, t, step, generator=None):
        out = self.prior.eps(x_t, t, step, generator=generator)
        self.bar.update(1)
        return out


def run(args: argparse.Namespace) -> int:
    from ctblend.io.output import single_writer
    from ctblend.pipeline.weights import resolve_prior, shipped_prior
    from ctblend.runtime import resolve_device

    if args.prior:
        path = resolve_prior(args.prior)
    else:
        path = shipped_prior()
        if path is None:
            raise ValueError("no shipped prior is installed: pass --prior CHECKPOINT")
    out = common.check_output(Path(args.out))
    device = resolve_device(args.device)
    with single_writer(out):
        _sample(args, path, out, device)
    return 0


def _sample(args: argparse.Namespace, path: Path, out: Path, device) -> None:
    """Draw the sample of ``args`` from the prior at ``path``; write ``out`` and its PNG."""
    from tqdm.auto import tqdm

    from ctblend.data.scaling import unit_to_hu
    from ctblend.figures import plot_panels
    from ctblend.geometry_config import write_arrays
    from ctblend.io.output import removed_on_error
    from ctblend.pipeline.volumes import DEFAULT_WINDOW_HU, hu_window
    from ctblend.priors.loading import load_prior, read_spec
    from ctblend.priors.unconditional import sample_unconditional

    prior = load_prior(path, device=device, precision=args.precision)
    spec = read_spec(path)
    shape = (args.n_slices, prior.image_size, prior.image_size)
    seed = args.seed or 0
    show = common.progress(args)
    with tqdm(total=args.nfe, desc="sampling", unit="step", disable=not show) as bar:
        volume = sample_unconditional(_CountingPrior(prior, bar), shape, args.nfe, args.eta, seed)
    spacing = tuple(args.spacing)
    attrs = {
        "kind": "ctblend-sample",
        "prior": str(path),
        "prior_kind": spec.kind,
        "prior_steps": spec.steps,
        "nfe": args.nfe,
        "eta": args.eta,
        "seed": seed,
        "spacing_note": "nominal voxel size (the prior does not know it)",
    }
    png = out.with_suffix(".png")
    with removed_on_error(png, out):
        plot_panels(
            {"sample": volume},
            png,
            window=hu_window(*DEFAULT_WINDOW_HU),
            spacing=spacing,
            title=f"unconditional sample — {path.name}, {args.nfe} steps, seed {seed}",
        )
        write_arrays(out, {"hu": unit_to_hu(volume).numpy()}, spacing_mm=spacing, attrs=attrs)
    print(f"wrote {out} (HU volume {shape[0]}×{shape[1]}×{shape[2]}) and {png}")
