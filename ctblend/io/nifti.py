"""NIfTI volumes (via nibabel) in the LPS (z, y, x) convention."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ctblend.io.volume import CTVolume, DataError, require_3d, to_lps_axes, volume_dtype


def read_nifti(path: str | os.PathLike) -> CTVolume:
    """Read a NIfTI volume (needs ``nibabel``: ``pip install ctblend[nifti]``).

    The affine (RAS+) is turned into the LPS (z, y, x) convention by axis permutation and flips.
    Voxel values with a scaling (``scl_slope``/``scl_inter``) are returned as float32.
    """
    path = Path(path)
    try:
        import nibabel
    except ImportError as exc:
        raise DataError(
            f"{path}: reading NIfTI needs nibabel, which is not installed; expected "
            "`pip install ctblend[nifti]`"
        ) from exc
    try:
        img = nibabel.load(path)
        proxy = img.dataobj
        slope = getattr(proxy, "slope", 1.0)
        inter = getattr(proxy, "inter", 0.0)
        if slope in (1.0, None) and inter in (0.0, None):
            data = np.asarray(proxy)
        else:
            data = img.get_fdata(dtype=np.float32)
    except (OSError, EOFError, nibabel.filebasedimages.ImageFileError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{path}: cannot read NIfTI ({message}); expected a complete .nii/.nii.gz"
        ) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    require_3d(data.shape, path, "NIfTI image")
    affine = np.asarray(img.affine, dtype=np.float64)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    columns = ras_to_lps @ affine[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise DataError(
            f"{path}: affine has a zero-length axis ({affine.tolist()}); expected voxel sizes > 0"
        )
    directions = (columns / spacing).T
    origin = ras_to_lps @ affine[:3, 3]
    hu, spacing_zyx, orientation = to_lps_axes(
        volume_dtype(data, path), directions, spacing.tolist(), origin, path
    )
    meta = {"format": "nifti", "path": str(path), **orientation}
    return CTVolume(hu=hu, spacing_mm=spacing_zyx, meta=meta)
