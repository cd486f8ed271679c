"""``ctblend recon`` without the command line: one input (measurement file or volume) → one
reconstruction file ``recon`` + a PNG, with the method, config, seed, timings and metrics."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import operators as ops
from ctblend.geometry_config import PROJECTIONS, Acquisition, read_attrs, read_measurements
from ctblend.io.hdf5 import open_hdf5
from ctblend.io.output import removed_on_error
from ctblend.io.volume import HDF5_SUFFIXES

from .configs import MethodConfig
from .run import Case, measured_case, plot_case, run_method, simulate_case, write_case
from .volumes import volume_input

__all__ = ["ReconInput", "input_kind", "load_case", "reconstruct_file", "recorded_acquisition"]


def reference_method(A: ops.Operator) -> str | None:
    """The analytic reconstruction shown beside a method: ``fdk`` for a circular cone beam,
    ``fbp`` in 2D, None for other 3D geometries (none applies)."""
    if isinstance(A.proj_geom, ops.ConeGeometry):
        return "fdk"
    return "fbp" if A.proj_geom.ndim == 2 else None


def input_kind(path: Path) -> str | None:
    """None for a measurement file (dataset ``sinogram``, or ``projections`` of a 3D
    acquisition), else what kind of volume ``path`` is;
    an unreadable or unrecognised HDF5 file is a one-line error saying why."""
    if str(path) == "phantom" and not path.exists():
        return "the procedural phantom"
    if path.is_dir():
        return "a folder, read as a DICOM series"
    if not path.name.lower().endswith(HDF5_SUFFIXES):
        return f"a {path.suffix or 'volume'} file"
    with open_hdf5(path) as f:
        names = sorted(f.keys())
    if "sinogram" in names or PROJECTIONS in names:
        return None
    if "hu" in names:
        return "an HDF5 volume: dataset 'hu', no 'sinogram'"
    raise ValueError(
        f"{path}: neither measurements (dataset 'sinogram') nor a volume (dataset 'hu'); "
        f"found datasets {names}"
    )


def recorded_acquisition(path: Path) -> tuple[str | None, int]:
    """(protocol name or None, slice size W) recorded in a measurement file's attributes."""
    attrs = read_attrs(path)
    shape = attrs.get("volume_shape")
    if not (isinstance(shape, list) and len(shape) == 3):
        raise ValueError(f"{path}: volume_shape attribute is {shape!r}; expected [Z, H, W]")
    return attrs.get("protocol") or None, int(shape[-1])


@dataclass(frozen=True)
class ReconInput:
    """How volume inputs become measurements: the acquisition (None: inputs must be measurement
    files), the in-plane scale, the z range, the phantom's slice count, the seed and the voxel
    size of inputs that do not record one."""

    acquisition: Acquisition | None
    scale: str | int = "cpu128"
    slices: tuple[int, int] | None = None
    phantom_slices: int = 36
    seed: int = 0
    spacing_mm: tuple[float, float, float] | None = None


def load_case(source: Path, is_measurements: bool, how: ReconInput, device) -> Case:
    """The case of one input: read a measurement file, or read and simulate a volume."""
    if is_measurements:
        if how.acquisition is not None:
            raise ValueError(
                f"{source} already holds measurements; drop --protocol/--geometry/--noise"
            )
        return measured_case(read_measurements(source), source, device)
    vol = volume_input(
        source, how.scale, how.slices, how.phantom_slices, how.seed, spacing_mm=how.spacing_mm
    )
    case = simulate_case(vol, how.acquisition, how.seed)  # on the CPU; y then to the device
    return dataclasses.replace(case, y=case.y.to(device))


def reconstruct_file(
    source: Path,
    case: Case,
    out: Path,
    method: str,
    config: MethodConfig,
    prior: Any = None,
    prior_path: Path | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """Reconstruct ``case`` into ``out`` (+ a PNG beside it, with FBP and the truth when known);
    returns the metrics ({} without a truth)."""
    start = time.perf_counter()
    acq = case.acquisition
    if method == "fbp-unet" and (acq.protocol is None or acq.protocol != prior.protocol):
        raise ValueError(
            f"{prior_path}: FBP-UNet was trained for protocol {prior.protocol!r}, but {source} "
            f"uses {acq.name!r} (one network per protocol)"
        )
    label = f"{source.name} {method}" if progress else None
    result = run_method(case, method, prior, config, progress=label)
    reference = reference_method(case.A)
    panels = {}
    if reference is not None and method not in ("fbp", reference):
        panels[reference] = run_method(case, reference).x
    key = "fdk" if method == "fbp" and reference == "fdk" else method
    panels[key] = result.x
    record = result.record
    attrs = {
        "kind": "ctblend-recon",
        "method": method,
        "config": record["config"],
        "seed": record["seed"] if record["seed"] is not None else seed,
        "nfe": record.get("nfe", 0),
        "timings": {
            "reconstruct_s": record["seconds"],
            "prior_s": record.get("prior_seconds"),
            "data_consistency_s": record.get("dc_seconds"),
            "total_s": time.perf_counter() - start,
        },
        "metrics": result.scores,
        "input": str(source),
        "prior": None if prior_path is None else str(prior_path),
        "device": str(device),
    }
    png = out.with_suffix(".png")
    with removed_on_error(png, out):
        psnr = {key: result.scores["volume_psnr"]} if result.scores else None
        std = None if result.std is None else {key: result.std}
        plot_case(case, panels, png, f"{source.name} — {acq.describe()} — {key}", psnr, std=std)
        arrays = {"recon": np.asarray(result.x)}
        if result.std is not None:  # K posterior samples: recon is their mean
            arrays["std"] = np.asarray(result.std)
        write_case(out, case, arrays, {**attrs, "samples": record.get("samples", 1)})
    return result.scores or {}
