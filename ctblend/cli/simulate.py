"""``ctblend simulate``: a volume + protocol/geometry → a sinogram HDF5 file and a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import common

HELP = "volume + protocol/geometry → sinogram HDF5"
DESCRIPTION = (
    "Simulate measurements of a volume ('phantom' or a path) and write an HDF5 "
    "file with datasets 'sinogram' (Z, V, D) — 'projections' (V, rows, cols) for a 3D geometry "
    "(cone, parallel3d, cone_vec) — and 'truth' (Z, H, W, in (HU+1024)/4095 units), plus a PNG "
    "view of the sinogram (of the middle detector row in 3D)."
)


def add_arguments(p) -> None:
    """The options of ``ctblend simulate``."""
    p.add_argument("volume", help="'phantom' or a DICOM folder / .h5 / .nii(.gz) / .npy(z) volume")
    common.add_acquisition(p, default="svct8")
    p.add_argument("--no-truth", action="store_true", help="do not store the ground truth")
    p.add_argument("--out", metavar="FILE.h5", help="output file (default <volume>_<protocol>.h5)")
    common.add_common(p)


def run(args: argparse.Namespace) -> int:
    if args.volume != "phantom" and not Path(args.volume).exists():
        raise FileNotFoundError(f"{args.volume}: no such file or folder")
    from ctblend.io.output import single_writer
    from ctblend.io.volume import volume_stem

    acquisition = common.acquisition(args, required=True)
    default = "phantom" if args.volume == "phantom" else volume_stem(args.volume)
    out = common.check_output(Path(args.out or f"{default}_{acquisition.name}.h5"))
    common.check_scale(args.scale)
    seed = args.seed or 0
    with single_writer(out):
        _simulate(args, acquisition, out, seed)
    return 0


def _simulate(args: argparse.Namespace, acquisition, out: Path, seed: int) -> None:
    """Measure the volume of ``args`` and write ``out`` and its PNG."""
    from ctblend.figures import plot_sinogram
    from ctblend.geometry_config import write_measurements
    from ctblend.io.output import removed_on_error
    from ctblend.pipeline.run import UNITS, simulate_case
    from ctblend.pipeline.volumes import volume_input

    vol = volume_input(
        args.volume, args.scale, args.slices, args.phantom_slices, seed, spacing_mm=args.spacing
    )
    case = simulate_case(vol, acquisition, seed)
    attrs = {
        "source": vol.source,
        "z_range": list(vol.z_range),
        "scale": str(args.scale),
        "seed": seed,
        "units": UNITS,
    }
    png = out.with_suffix(".png")
    with removed_on_error(png, out):
        plot_sinogram(case.y, png, title=f"{vol.source} — {acquisition.describe()}")
        write_measurements(
            out,
            case.y,
            acquisition,
            volume_shape=case.truth.shape,
            spacing_mm=vol.spacing_mm,
            truth=None if args.no_truth else case.truth,
            attrs=attrs,
        )
    shape = case.y.transpose(0, 1).shape if acquisition.is_3d else case.y.shape
    what = "projections" if acquisition.is_3d else "sinogram"
    print(f"wrote {out} ({what} {'×'.join(map(str, shape))}, {acquisition.name}) and {png}")
