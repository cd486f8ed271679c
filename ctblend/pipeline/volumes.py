"""Volumes in: any file ``read_volume`` reads, or the procedural phantom, at a scale.

The one place where HU become [0, 1] units (x = (clip(HU) + 1024) / 4095), slices are chosen
and the in-plane size is brought to the scale (z is never resampled).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctblend.data.phantom import ct_phantom, phantom_spacing_mm
from ctblend.data.scaling import HU_MIN, HU_RANGE, hu_to_unit, scale_size, to_scale
from ctblend.io import DataError, read_volume
from ctblend.runtime import check_memory

__all__ = [
    "DEFAULT_WINDOW_HU",
    "VolumeInput",
    "hu_window",
    "load_volume",
    "phantom_input",
    "volume_input",
]

#: The display window of reconstructions (lung to soft tissue), HU.
DEFAULT_WINDOW_HU = (-1000.0, 600.0)
#: Peak memory of bringing a volume to a scale (``to_scale``'s float64 resize) and of building
#: the phantom, in float32 volumes of the result (measured with tracemalloc: 8.9 and 6.9).
SCALE_PEAK_VOLUMES = 9
PHANTOM_PEAK_VOLUMES = 7


def hu_window(low: float, high: float) -> tuple[float, float]:
    """An HU display window in [0, 1] units."""
    return ((low - HU_MIN) / HU_RANGE, (high - HU_MIN) / HU_RANGE)


@dataclass(frozen=True)
class VolumeInput:
    """A volume ready for simulation: ``x`` ``(Z, H, W)`` float32 in [0, 1] at the chosen scale,
    ``spacing_mm`` ``(dz, dy, dx)`` after scaling, a description of the source and its z range."""

    x: np.ndarray
    spacing_mm: tuple[float, float, float]
    source: str
    z_range: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict)


def _z_range(z: int, source: object, slices: tuple[int, int] | None, n_central: int | None):
    if slices is not None:
        a, b = slices
        if not 0 <= a < b <= z:
            raise DataError(f"{source}: slices {a}:{b} outside the volume's {z} slices")
        return a, b
    if n_central is not None and n_central < z:
        a = (z - n_central) // 2
        return a, a + n_central
    return 0, z


def _check_size(shape: tuple[int, int, int], volumes: int, source: object) -> None:
    """Refuse, in one line, a volume of ``shape`` whose making needs more memory than is free."""
    z, h, w = shape
    check_memory(
        volumes * 4 * z * h * w,
        f"{source}: a {z} × {h} × {w} volume",
        "a smaller in-plane size (--scale, --size) or fewer slices",
    )


def phantom_input(
    n_slices: int,
    size: int | str = 128,
    seed: int = 0,
    slices: tuple[int, int] | None = None,
) -> VolumeInput:
    """The procedural phantom ``(n_slices, size, size)`` (see :func:`ctblend.data.ct_phantom`),
    optionally cut to slices ``[a, b)`` (its spacing stays that of the whole phantom)."""
    shape = (int(n_slices), scale_size(size), scale_size(size))
    a, b = _z_range(shape[0], "phantom", slices, None)
    _check_size(shape, PHANTOM_PEAK_VOLUMES, "phantom")
    x = np.ascontiguousarray(ct_phantom(shape, seed=seed)[a:b])
    return VolumeInput(x, phantom_spacing_mm(shape), f"phantom(seed={seed})", (a, b))


def load_volume(
    path: str | os.PathLike,
    size: int | str = "cpu128",
    slices: tuple[int, int] | None = None,
    n_central: int | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
) -> VolumeInput:
    """Read any volume (``spacing_mm`` for files without one, e.g. ``.npy``), keep slices
    ``[a, b)`` (or the ``n_central`` middle ones, or all), map HU to [0, 1] and resize in-plane
    to ``size`` (a scale name or an int)."""
    volume = read_volume(path, spacing_mm=spacing_mm)
    a, b = _z_range(volume.shape[0], path, slices, n_central)
    hu = volume.hu[a:b]
    target = scale_size(size)
    _check_size((b - a, target, target), SCALE_PEAK_VOLUMES, path)
    x = np.ascontiguousarray(to_scale(hu_to_unit(hu), target), dtype=np.float32)
    dz, dy, dx = volume.spacing_mm
    spacing = (float(dz), float(dy * hu.shape[1] / target), float(dx * hu.shape[2] / target))
    return VolumeInput(x, spacing, str(path), (a, b), dict(volume.meta))


def volume_input(
    spec: str | os.PathLike,
    size: int | str = "cpu128",
    slices: tuple[int, int] | None = None,
    phantom_slices: int = 36,
    seed: int = 0,
    spacing_mm: tuple[float, float, float] | None = None,
) -> VolumeInput:
    """``phantom`` (``phantom_slices`` slices of the phantom of ``seed``) or a volume path
    (``spacing_mm`` for a file without one, e.g. ``.npy``)."""
    if str(spec) == "phantom" and not Path(spec).exists():
        if spacing_mm is not None:
            raise DataError("phantom: --spacing given; the phantom has its own spacing")
        return phantom_input(phantom_slices, size, seed, slices)
    return load_volume(spec, size, slices, spacing_mm=spacing_mm)
