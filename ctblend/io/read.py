"""``read_volume``: any supported file or DICOM folder → :class:`CTVolume`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ctblend.io.dicom import dicom_file_problem, read_dicom_series
from ctblend.io.hdf5 import read_hdf5, resolve_spacing
from ctblend.io.nifti import read_nifti
from ctblend.io.npy import read_numpy
from ctblend.io.volume import HDF5_SUFFIXES, NIFTI_SUFFIXES, NUMPY_SUFFIXES, CTVolume, DataError


def read_volume(path: str | os.PathLike, spacing_mm: Sequence[float] | None = None) -> CTVolume:
    """Read a CT volume in HU from whatever ``path`` is.

    A folder: one DICOM series; ``.h5``/``.hdf5``/``.hdf``: ctblend/``../shared/data/ct`` HDF5;
    ``.nii``/``.nii.gz``: NIfTI; ``.npy``/``.npz``: NumPy with ``spacing_mm=(dz, dy, dx)`` from the
    caller. Returns ``(Z, H, W)`` in the module's axis convention.
    """
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise DataError(f"{path}: not found; expected a DICOM folder or a volume file")
    if path.is_dir():
        volume = read_dicom_series(path)
        return CTVolume(
            volume.hu, resolve_spacing(path, volume.spacing_mm, spacing_mm), volume.meta
        )
    if name.endswith(HDF5_SUFFIXES):
        return read_hdf5(path, spacing_mm=spacing_mm)
    if name.endswith(NIFTI_SUFFIXES):
        volume = read_nifti(path)
        return CTVolume(
            volume.hu, resolve_spacing(path, volume.spacing_mm, spacing_mm), volume.meta
        )
    if name.endswith(NUMPY_SUFFIXES):
        return read_numpy(path, spacing_mm=spacing_mm)
    if name.endswith(".dcm"):
        problem = dicom_file_problem(path)
        if problem is not None:
            raise DataError(f"{path}: a broken DICOM file ({problem}); expected a DICOM image")
        raise DataError(
            f"{path}: a single DICOM file; expected the folder holding the whole series"
        )
    raise DataError(
        f"{path}: unknown file type '{path.suffix}'; expected a DICOM folder, "
        ".h5/.hdf5, .nii/.nii.gz or .npy/.npz"
    )
