"""Sanity checks of an acquisition before any work: the source outside the volume, the detector
covering the volume's projection at every view.

Everything is computed from the ``operators`` geometry values: the corners of the box of voxel
centres (``VolumeGeometry.extent`` less half a voxel; the projectors interpolate between voxel
centres) are projected through each view of the projection geometry's vector form
(``to_vec()``; the curved fan from its distances), and the projection of a box is the hull of its
corners' projections. Axes are ASTRA's: x along columns, y along rows, z along slices.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np

import operators as ops
from ctblend.io.volume import DataError, DataWarning

__all__ = ["check_acquisition", "detector_reach", "source_positions"]

#: Slack of the coverage test, in detector pixels (rounding of the corner projections).
PIXEL_SLACK = 1e-6


def _corners(vg: ops.VolumeGeometry) -> np.ndarray:
    """The corners of the voxel-centre box: (4, 2) points (x, y) in 2D, (8, 3) (x, y, z) in 3D."""
    bounds = [
        (lo + step / 2, hi - step / 2)
        for (lo, hi), step in zip(vg.extent[::-1], vg.spacing[::-1], strict=True)
    ]
    return np.array(list(itertools.product(*bounds)), dtype=np.float64)


def _box(vg: ops.VolumeGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) corners of the whole volume box, in the ASTRA axes."""
    extent = np.array(vg.extent[::-1], dtype=np.float64)
    return extent[:, 0], extent[:, 1]


def source_positions(pg: ops.ProjectionGeometry) -> np.ndarray | None:
    """(V, 2 or 3) source positions of a fan or cone geometry; None for parallel beams."""
    if isinstance(pg, ops.FanGeometry) and pg.curved:
        a = np.asarray(pg.angles, dtype=np.float64)
        return np.stack([np.sin(a), -np.cos(a)], axis=1) * pg.src_orig
    vec = pg.to_vec()
    if isinstance(vec, ops.FanVecGeometry):
        return np.asarray(vec.vectors)[:, 0:2]
    if isinstance(vec, ops.ConeVecGeometry):
        return np.asarray(vec.vectors)[:, 0:3]
    return None


def detector_reach(vg: ops.VolumeGeometry, pg: ops.ProjectionGeometry) -> np.ndarray:
    """(V, 2) largest |column| and |row| offset (in pixels, from the detector centre) that the
    volume box reaches at each view (rows 0 in 2D). The source must lie outside the box."""
    corners = _corners(vg)  # (n, dim)
    if isinstance(pg, ops.FanGeometry) and pg.curved:  # arc detector centred on the source
        a = np.asarray(pg.angles, dtype=np.float64)[:, None]
        toward_source = corners[None, :, 0] * np.sin(a) - corners[None, :, 1] * np.cos(a)
        across = corners[None, :, 0] * np.cos(a) + corners[None, :, 1] * np.sin(a)
        fan_angle = np.arctan2(across, pg.src_orig - toward_source)
        columns = np.abs(fan_angle).max(1) * pg.src_det / pg.det_spacing
        return np.stack([columns, np.zeros_like(columns)], axis=1)
    vec_geom = pg.to_vec()
    vec = np.asarray(vec_geom.vectors, dtype=np.float64)[:, None, :]  # (V, 1, 3·dim or 4·dim)
    views, (n, dim) = vec.shape[0], corners.shape
    first, centre = vec[..., 0:dim], vec[..., dim : 2 * dim]
    pixels = [vec[..., (2 + k) * dim : (3 + k) * dim] for k in range(dim - 1)]
    points = np.broadcast_to(corners[None], (views, n, dim))
    if isinstance(vec_geom, (ops.FanVecGeometry, ops.ConeVecGeometry)):
        start, direction = np.broadcast_to(first, points.shape), points - first  # src → corner
    else:
        start, direction = points, np.broadcast_to(first, points.shape)  # along the ray
    # start + t·direction = centre + Σ_k a_k·pixel_k, solved for (t, a_1, …) per view and corner
    matrix = np.stack([direction, *(-np.broadcast_to(p, points.shape) for p in pixels)], axis=-1)
    rhs = (np.broadcast_to(centre, points.shape) - start)[..., None]
    offsets = np.abs(np.linalg.solve(matrix, rhs)[..., 1:, 0]).max(1)  # (V, dim − 1)
    if dim == 2:
        return np.concatenate([offsets, np.zeros_like(offsets)], axis=1)
    return offsets


def _detector_shape(pg: ops.ProjectionGeometry) -> tuple[int, int]:
    """(rows, columns): rows 1 for a 2D geometry."""
    if hasattr(pg, "det_shape"):
        return tuple(pg.det_shape)
    return 1, pg.det_count


def check_acquisition(
    vg: ops.VolumeGeometry,
    pg: ops.ProjectionGeometry,
    source: object = "geometry",
    allow_truncation: bool = False,
) -> None:
    """Refuse, in one line (``DataError``), a source inside or touching the volume box, and a
    detector that does not cover the volume's projection at every view; with
    ``allow_truncation`` (a deliberate interior problem) the latter is a ``DataWarning``."""
    lo, hi = _box(vg)
    sources = source_positions(pg)
    if sources is not None:
        inside = np.all((sources >= lo) & (sources <= hi), axis=1)
        if inside.any():
            view = int(np.argmax(inside))
            where = ", ".join(f"{v:g}" for v in sources[view])
            size = " × ".join(f"{h - l:g}" for l, h in zip(lo, hi, strict=True))
            raise DataError(
                f"{source}: the source at view {view} ({where}) lies inside or on the "
                f"{size} volume box centred on the rotation axis; expected src_orig larger "
                f"than the volume's half-diagonal ({float(np.linalg.norm(hi - lo)) / 2:g})"
            )
    rows, cols = _detector_shape(pg)
    reach = detector_reach(vg, pg)
    need_cols = 2 * reach[:, 0].max()
    need_rows = 2 * reach[:, 1].max()
    short_cols = need_cols > cols + PIXEL_SLACK
    short_rows = rows > 1 and need_rows > rows + PIXEL_SLACK
    if not (short_cols or short_rows):
        return
    view = int(np.argmax(reach[:, 0] if short_cols else reach[:, 1]))
    if rows > 1:
        have = f"{rows} × {cols} pixels"
        need = f"{math.ceil(need_rows)} × {math.ceil(need_cols)}"
    else:
        have, need = f"{cols} bins", f"{math.ceil(need_cols)}"
    text = (
        f"{source}: the detector ({have}) does not cover the volume's projection (at view "
        f"{view} it spans {need} of them); expected a detector of at least {need} at this "
        "pitch and distance"
    )
    if not allow_truncation:
        raise DataError(f"{text} (or allow_truncation: true in the geometry, for interior CT)")
    warnings.warn(
        f"{text}; reconstructing a truncated (interior) problem as asked", DataWarning, stacklevel=2
    )
