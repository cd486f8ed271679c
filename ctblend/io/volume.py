"""The volume type, its errors and checks, and the LPS axis convention (``(z, y, x)``)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NUMPY_SUFFIXES = (".npy", ".npz")
#: Every volume file suffix, longest match first (``.nii.gz`` before ``.nii``).
VOLUME_SUFFIXES = (".nii.gz", *HDF5_SUFFIXES, ".nii", *NUMPY_SUFFIXES)
# Files with these suffixes are documentation beside a DICOM series: ignored without a warning.
DOC_SUFFIXES = (".json", ".txt", ".md", ".csv", ".xml", ".html", ".pdf", ".log", ".png", ".jpg")
# Attribute names with a fixed meaning in ctblend HDF5 files (not free metadata).
RESERVED_ATTRS = ("spacing_mm", "json_attrs", "format", "path")


def volume_stem(path: str | os.PathLike) -> str:
    """A volume's name without its suffix (``a.nii.gz`` → ``a``; a DICOM folder keeps its name)."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class DataError(ValueError):
    """Bad input data: the message names the file, the value found and what was expected."""


class DataWarning(UserWarning):
    """Input that was accepted with a change (e.g. a non-DICOM file skipped in a series folder)."""


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT volume in Hounsfield units.

    ``hu``: ``(Z, H, W)`` int16 or float32 in the module's axis convention; ``spacing_mm``:
    ``(dz, dy, dx)`` in mm; ``meta``: provenance (``format``, ``path`` and format-specific keys).
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        source = self.meta.get("path", "CTVolume")
        hu = self.hu
        if not isinstance(hu, np.ndarray) or hu.ndim != 3:
            shape = getattr(hu, "shape", type(hu).__name__)
            raise DataError(f"{source}: volume has shape {shape}; expected a 3-D array (Z, H, W)")
        if hu.dtype not in (np.int16, np.float32):
            raise DataError(f"{source}: volume dtype is {hu.dtype}; expected int16 or float32")
        check_finite(hu, source, "HU")
        object.__setattr__(self, "spacing_mm", check_spacing(self.spacing_mm, source))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, H, W)``."""
        return tuple(self.hu.shape)


def check_finite(array: np.ndarray, source: object, what: str) -> None:
    """One-line DataError when ``array`` holds NaN or inf (``what``: the values, e.g. "HU")."""
    if array.dtype.kind != "f":
        return
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{source}: {int(bad.sum())} of {array.size} values are NaN or inf (the first at "
            f"index {first}); expected finite {what}"
        )


def check_spacing(spacing: Any, source: object) -> tuple[float, float, float]:
    try:
        values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        values = np.array([])
    if values.shape != (3,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise DataError(
            f"{source}: spacing_mm is {spacing!r}; expected three positive numbers (dz, dy, dx) mm"
        )
    return (float(values[0]), float(values[1]), float(values[2]))


def volume_dtype(array: np.ndarray, source: object) -> np.ndarray:
    """int16 and float32 pass; other numeric types become float32 (exact for |v| < 2**24)."""
    if array.dtype in (np.int16, np.float32):
        return array
    if array.dtype.kind not in "iuf":
        raise DataError(f"{source}: array dtype is {array.dtype}; expected a numeric volume")
    return array.astype(np.float32)


def require_3d(shape: tuple[int, ...], source: object, what: str = "array") -> None:
    if len(shape) != 3:
        raise DataError(
            f"{source}: {what} has shape {tuple(shape)} ({len(shape)}-D); "
            "expected a 3-D volume (Z, H, W)"
        )
    if min(shape) < 1:
        raise DataError(f"{source}: {what} has shape {tuple(shape)}; expected no empty axis")


_AXIS_CODES = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}


def to_lps_axes(
    array: np.ndarray,
    directions: np.ndarray,
    spacing: Sequence[float],
    origin: np.ndarray,
    source: object,
) -> tuple[np.ndarray, tuple[float, float, float], dict[str, Any]]:
    """Permute/flip ``array`` so its axes run along LPS (+z, +y, +x).

    ``directions[a]`` is the unit LPS vector of increasing index along array axis ``a``, ``origin``
    the LPS position of voxel ``[0, 0, 0]``. Returns the array, its spacing and orientation meta.
    """
    directions = np.asarray(directions, dtype=np.float64)
    lps_axis = np.argmax(np.abs(directions), axis=1)
    if sorted(lps_axis.tolist()) != [0, 1, 2]:
        raise DataError(
            f"{source}: voxel axes {directions.round(3).tolist()} do not map one-to-one onto the "
            "patient axes; expected an (almost) axis-aligned grid"
        )
    signs = np.sign(directions[np.arange(3), lps_axis]).astype(int)
    codes = "".join(_AXIS_CODES[(int(a), int(s))] for a, s in zip(lps_axis, signs, strict=True))
    cosines = np.abs(directions[np.arange(3), lps_axis])
    oblique = bool(np.min(cosines) < 1 - 1e-4)
    if oblique:
        warnings.warn(
            f"{source}: oblique voxel grid (axes {codes}, smallest direction cosine "
            f"{np.min(cosines):.4f}); using the nearest axis-aligned orientation",
            DataWarning,
            stacklevel=3,
        )
    origin = np.asarray(origin, dtype=np.float64).copy()
    for axis in range(3):
        if signs[axis] < 0:
            array = np.flip(array, axis=axis)
            origin += (array.shape[axis] - 1) * spacing[axis] * directions[axis]
    order = [int(np.flatnonzero(lps_axis == k)[0]) for k in (2, 1, 0)]
    array = np.ascontiguousarray(np.transpose(array, order))
    new_spacing = (float(spacing[order[0]]), float(spacing[order[1]]), float(spacing[order[2]]))
    meta = {
        "source_axis_codes": codes,
        "oblique": oblique,
        "first_voxel_center_lps_mm": [float(v) for v in origin],
    }
    return array, new_spacing, meta
