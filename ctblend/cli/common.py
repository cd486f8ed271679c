"""What every command shares: the one-line-error parser, option types, common option groups,
``KEY=VALUE`` items, progress, the acquisition of ``--protocol``/``--geometry`` and output checks.

Nothing here imports torch: ``--help`` and path errors answer before any heavy import.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ctblend.io.volume import HDF5_SUFFIXES


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def slice_range(text: str) -> tuple[int, int]:
    """``"A:B"`` → ``(A, B)``: slices A … B−1 along z."""
    try:
        a, b = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"slices {text!r}; expected A:B (z from A to B-1)"
        ) from None
    if not 0 <= a < b:
        raise argparse.ArgumentTypeError(f"slices {text!r}; expected 0 <= A < B")
    return a, b


def scale(text: str) -> str | int:
    """``cpu128`` / ``paper256`` (checked where used) or a pixel count."""
    return int(text) if str(text).isdigit() else text


def spacing(text: str) -> tuple[float, float, float]:
    """``"DZ,DY,DX"`` → three positive voxel sizes in mm."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(
            f"{text!r}; expected three positive numbers DZ,DY,DX in mm, e.g. 3,1.5,1.5"
        )
    return values


def unit_interval(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}; expected a number in [0, 1]")
    return value


def check_scale(value: str | int) -> int:
    """``--scale`` as a pixel count (one line for an unknown name), checked before any work."""
    from ctblend.data.scaling import scale_size

    try:
        return scale_size(value)
    except ValueError as exc:
        raise ValueError(f"--scale {value}: {exc}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}; expected a positive integer")
    return value


def _is_override(item: str) -> bool:
    key = item.split("=", 1)[0]
    return "=" in item and key.replace(".", "_").replace("-", "_").isidentifier()


def split_items(items: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Positional items → (paths, ``KEY=VALUE`` overrides with YAML-typed values)."""
    import yaml

    paths, overrides = [], {}
    for item in items:
        if _is_override(item) and not Path(item).exists():
            key, text = item.split("=", 1)
            try:
                overrides[key.replace("-", "_")] = yaml.safe_load(text) if text else None
            except yaml.YAMLError:
                raise ValueError(f"override {item!r}: cannot parse the value") from None
        else:
            paths.append(item)
    return paths, overrides


def progress(args: argparse.Namespace) -> bool:
    """Progress bars unless ``--quiet`` or ``CI`` is set (and only on rank 0 under torchrun)."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return not (args.quiet or ci) and int(os.environ.get("RANK", "0")) == 0


def acquisition(args: argparse.Namespace, required: bool):
    """The Acquisition of ``--protocol`` / ``--geometry`` / ``--noise`` (None when not asked)."""
    from ctblend.geometry_config import Acquisition, geometry_from_yaml

    if args.protocol and args.geometry:
        raise ValueError("--protocol and --geometry both given; expected one of them")
    if args.geometry:
        geometry, noise = geometry_from_yaml(args.geometry)
        return Acquisition(geometry=geometry, noise=noise or args.noise, source=args.geometry)
    if args.protocol or required:
        name = args.protocol or "svct8"
        if args.noise and not name.endswith("+noise"):
            name += "+noise"
        return Acquisition(protocol=name)
    if args.noise:
        raise ValueError("--noise needs --protocol or --geometry (a volume to simulate from)")
    return None


def check_output(path: Path, suffixes: tuple[str, ...] = HDF5_SUFFIXES) -> Path:
    """``--out`` as a file name with one of ``suffixes`` in a writable folder."""
    from ctblend.io.output import check_writable

    if not path.name.lower().endswith(suffixes):
        raise ValueError(f"--out {path}: expected a file name ending in {' or '.join(suffixes)}")
    if path.exists() and path.is_dir():
        raise ValueError(f"--out {path}: is a folder; expected a file name")
    check_writable(path.parent, f"--out {path}: folder")
    return path


def about(path: Path, exc: BaseException) -> str:
    """One line on ``exc`` that names ``path`` once (messages often start with it already)."""
    text = one_line(exc)
    return text if text.startswith(str(path)) else f"{path}: {text}"


def one_line(exc: BaseException) -> str:
    """An exception as one line of text."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return " ".join(text.split())


def add_common(parser: argparse.ArgumentParser, options_config: bool = True) -> None:
    """``--device``, ``--seed``, ``--quiet`` (and ``--config`` of option defaults)."""
    group = parser.add_argument_group("common options")
    group.add_argument("--device", help="auto (default: CUDA when available), cpu, cuda, cuda:N")
    group.add_argument("--seed", type=int, help="random seed (default 0)")
    group.add_argument(
        "--quiet", action="store_true", help="no progress bars (also when CI is set)"
    )
    if options_config:
        group.add_argument(
            "--config",
            metavar="FILE.yaml",
            help="YAML mapping of option defaults "
            "(keys are option names, e.g. 'nfe: 50'); command-line options win",
        )


def add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="network precision (default auto: bf16 where the CPU/GPU has it natively, else "
        "fp32; fp32 is the reference; bf16 without native support runs fp32 and says so)",
    )


def add_acquisition(parser: argparse.ArgumentParser, default: str | None) -> None:
    """The acquisition and the volume options of ``simulate`` and ``recon``."""
    group = parser.add_argument_group("acquisition (for volume inputs)")
    group.add_argument(
        "--protocol",
        help="svct4, svct6, svct8, lact90, … (+noise); "
        + (f"default {default}" if default else "needed for a volume input"),
    )
    group.add_argument(
        "--geometry",
        metavar="FILE.yaml",
        help="a geometry in YAML: 2D slice-wise (parallel, fan_flat, fan_arc) or 3D (cone, "
        "parallel3d, cone_vec); see docs/quickstart.md",
    )
    group.add_argument("--noise", action="store_true", help="Poisson noise, I0 = 1e5 per bin")
    group.add_argument(
        "--scale",
        type=scale,
        default="cpu128",
        help="in-plane size: cpu128 (default), paper256 or a number of pixels",
    )
    group.add_argument("--slices", type=slice_range, metavar="A:B", help="use slices A … B-1")
    group.add_argument(
        "--spacing",
        type=spacing,
        metavar="DZ,DY,DX",
        help="voxel size in mm of inputs that do not record it (.npy, .npz without spacing_mm)",
    )
    group.add_argument(
        "--phantom-slices",
        type=positive_int,
        default=36,
        metavar="N",
        help="slices of the procedural phantom (input 'phantom'; default 36)",
    )
