"""Our circular cone beam in RTK (the Reconstruction Toolkit, PyPI ``itk-rtk``): geometry,
images and RTK's own projectors and FDK, for comparisons and benchmarks.

Conventions (docs/operators.md, "Cone beam"): RTK rotates about its ``Y`` axis with the source
at ``(sid sin θ, 0, sid cos θ)`` and the detector's ``u`` along ``(cos θ, 0, −sin θ)``; ours
rotates about ``z`` with the source at ``(R sin β, −R cos β, 0)``. The world maps as
``(X, Y, Z) = (x, z, −y)`` and ``θ = β`` in degrees. Our ``(Z, H, W)`` volume is RTK's ``(k, j,
i)`` array ``(−y, z, x)``: rows reversed and the first two axes swapped. Projections
``(rows, V, cols)`` are RTK's ``(V, rows, cols)``; a detector offset moves the projection
image's origin. Images are float32 (RTK's CPU wheels). ``itk`` is imported when first used.
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import ConeGeometry, VolumeGeometry


def _itk():
    import itk
    from itk import RTK

    return itk, RTK


def _image(array: np.ndarray, origin, spacing):
    itk, _ = _itk()
    img = itk.image_from_array(np.ascontiguousarray(array, dtype=np.float32))  # a copy
    img.SetOrigin([float(o) for o in origin])
    img.SetSpacing([float(s) for s in spacing])
    return img


def geometry(pg: ConeGeometry):
    """``rtk.ThreeDCircularProjectionGeometry`` of a circular ``cone``."""
    _, rtk = _itk()
    g = rtk.ThreeDCircularProjectionGeometry.New()
    sdd = pg.src_orig + pg.orig_det
    for beta in pg.angles:
        g.AddProjection(pg.src_orig, sdd, math.degrees(beta), 0.0, 0.0)
    return g


def volume_image(x: np.ndarray, vol: VolumeGeometry):
    """``x`` ``(Z, H, W)`` as an RTK volume (identity direction)."""
    (zmin, _), (_, ymax), (xmin, _) = vol.extent
    dz, dy, dx = vol.spacing
    origin = (xmin + dx / 2, zmin + dz / 2, -ymax + dy / 2)
    return _image(np.swapaxes(x, 0, 1)[::-1], origin, (dx, dz, dy))


def volume_array(img) -> np.ndarray:
    """An RTK volume made by ``volume_image`` (or on its grid) back as ``(Z, H, W)``."""
    itk, _ = _itk()
    return np.swapaxes(itk.array_from_image(img)[::-1], 0, 1).copy()


def projection_image(y: np.ndarray, pg: ConeGeometry, det_offset: tuple[float, float] = (0.0, 0.0)):
    """``y`` ``(rows, V, cols)`` as an RTK projection stack; ``det_offset`` (v, u) in mm moves
    the detector centre along ``v`` (``z``) and ``u``."""
    rows, cols = pg.det_shape
    dv, du = pg.det_spacing
    origin = (-(cols - 1) / 2 * du + det_offset[1], -(rows - 1) / 2 * dv + det_offset[0], 0.0)
    return _image(np.swapaxes(y, 0, 1), origin, (du, dv, 1.0))


def projection_array(img) -> np.ndarray:
    """An RTK projection stack back as ``(rows, V, cols)``."""
    itk, _ = _itk()
    return np.swapaxes(itk.array_from_image(img), 0, 1).copy()


def _run(kind: str, inputs, pg: ConeGeometry):
    itk, rtk = _itk()
    image = itk.Image[itk.F, 3]
    f = getattr(rtk, kind)[image, image].New()
    for i, img in enumerate(inputs):
        f.SetInput(i, img)
    f.SetGeometry(geometry(pg))
    f.Update()
    return f.GetOutput()


def forward_project(x, vol: VolumeGeometry, pg: ConeGeometry, det_offset=(0.0, 0.0)):
    """RTK's Joseph forward projection of ``x`` ``(Z, H, W)`` → ``(rows, V, cols)``."""
    empty = np.zeros((pg.det_shape[0], len(pg.angles), pg.det_shape[1]), np.float32)
    out = _run(
        "JosephForwardProjectionImageFilter",
        [projection_image(empty, pg, det_offset), volume_image(np.asarray(x), vol)],
        pg,
    )
    return projection_array(out)


def back_project(y, vol: VolumeGeometry, pg: ConeGeometry, det_offset=(0.0, 0.0)):
    """RTK's Joseph backprojection of ``y`` ``(rows, V, cols)`` → ``(Z, H, W)``."""
    out = _run(
        "JosephBackProjectionImageFilter",
        [volume_image(np.zeros(vol.shape, np.float32), vol), projection_image(y, pg, det_offset)],
        pg,
    )
    return volume_array(out)


def fdk(y, vol: VolumeGeometry, pg: ConeGeometry, short_scan: bool = False) -> np.ndarray:
    """RTK's FDK (ramp filter, no truncation correction) of ``y`` ``(rows, V, cols)``;
    ``short_scan`` applies RTK's Parker weights first."""
    itk, rtk = _itk()
    image = itk.Image[itk.F, 3]
    proj = projection_image(y, pg)
    if short_scan:
        parker = rtk.ParkerShortScanImageFilter[image].New()
        parker.SetInput(proj)
        parker.SetGeometry(geometry(pg))
        parker.Update()
        proj = parker.GetOutput()
    f = rtk.FDKConeBeamReconstructionFilter[image].New()
    f.SetInput(0, volume_image(np.zeros(vol.shape, np.float32), vol))
    f.SetInput(1, proj)
    f.SetGeometry(geometry(pg))
    f.Update()
    return volume_array(f.GetOutput())


def set_threads(n: int) -> None:
    """RTK/ITK's default and maximum thread counts, for the whole process."""
    itk, _ = _itk()
    itk.MultiThreaderBase.SetGlobalMaximumNumberOfThreads(n)
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(n)


def version() -> str:
    """The installed ``itk-rtk`` version."""
    from importlib.metadata import version as installed

    return installed("itk-rtk")
