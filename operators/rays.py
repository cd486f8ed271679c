"""Rays of a projection geometry as (start point, unit direction) pairs, in float64 numpy.

One ray per detector pixel and angle, ordered like the projection data: 2D ``(n_angles,
det_count)``, 3D ``(det_rows, n_angles, det_cols)``. For fan and cone beams the start point is
the source; for parallel beams it is the detector pixel centre.
"""

from __future__ import annotations

import numpy as np

from .geometry import (
    ConeVecGeometry,
    FanGeometry,
    FanVecGeometry,
    Parallel3DVecGeometry,
    ParallelVecGeometry,
    ProjectionGeometry,
    VolumeGeometry,
)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def detector_pixels_2d(vec: np.ndarray, det_count: int) -> np.ndarray:
    """Pixel centres ``(n_angles, det_count, 2)`` of a flat 2D detector given ASTRA vectors."""
    offsets = np.arange(det_count) - (det_count - 1) / 2
    return vec[:, None, 2:4] + offsets[None, :, None] * vec[:, None, 4:6]


def rays_2d(pg: ProjectionGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``(origin, direction)``, each ``(n_angles, det_count, 2)``."""
    if isinstance(pg, FanGeometry) and pg.curved:
        a = np.asarray(pg.angles)
        src = np.stack([np.sin(a), -np.cos(a)], axis=1) * pg.src_orig
        central = -src / pg.src_orig
        across = np.stack([np.cos(a), np.sin(a)], axis=1)
        gamma = (np.arange(pg.det_count) - (pg.det_count - 1) / 2) * pg.det_spacing / pg.src_det
        direction = (
            np.cos(gamma)[None, :, None] * central[:, None, :]
            + np.sin(gamma)[None, :, None] * across[:, None, :]
        )
        return np.broadcast_to(src[:, None, :], direction.shape).copy(), direction
    vg = pg.to_vec()
    vec = np.asarray(vg.vectors)
    pixels = detector_pixels_2d(vec, vg.det_count)
    if isinstance(vg, ParallelVecGeometry):
        direction = np.broadcast_to(_unit(vec[:, None, 0:2]), pixels.shape).copy()
        return pixels, direction
    if isinstance(vg, FanVecGeometry):
        src = np.broadcast_to(vec[:, None, 0:2], pixels.shape).copy()
        return src, _unit(pixels - src)
    raise ValueError(f"{type(pg).__name__} is not a 2D projection geometry")


def rays_3d(pg: ProjectionGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``(origin, direction)``, each ``(det_rows, n_angles, det_cols, 3)`` in (x, y, z)."""
    vg = pg.to_vec()
    vec = np.asarray(vg.vectors)
    rows, cols = vg.det_shape
    du = np.arange(cols) - (cols - 1) / 2
    dv = np.arange(rows) - (rows - 1) / 2
    pixels = (
        vec[None, :, None, 3:6]
        + du[None, None, :, None] * vec[None, :, None, 6:9]
        + dv[:, None, None, None] * vec[None, :, None, 9:12]
    )
    if isinstance(vg, Parallel3DVecGeometry):
        direction = np.broadcast_to(_unit(vec[None, :, None, 0:3]), pixels.shape).copy()
        return pixels, direction
    if isinstance(vg, ConeVecGeometry):
        src = np.broadcast_to(vec[None, :, None, 0:3], pixels.shape).copy()
        return src, _unit(pixels - src)
    raise ValueError(f"{type(pg).__name__} is not a 3D projection geometry")


def box_hits(vol: VolumeGeometry, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Boolean mask of rays whose line crosses the volume's bounding box (slab test).

    ``origin``/``direction`` have a trailing axis of 2 ``(x, y)`` or 3 ``(x, y, z)``.
    """
    ext = vol.extent[::-1]  # x first
    lo_t = np.full(origin.shape[:-1], -np.inf)
    hi_t = np.full(origin.shape[:-1], np.inf)
    for axis in range(origin.shape[-1]):
        lo, hi = ext[axis]
        o, d = origin[..., axis], direction[..., axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (lo - o) / d, (hi - o) / d
        parallel_inside = (d == 0) & (o > lo) & (o < hi)
        parallel_outside = (d == 0) & ~parallel_inside
        t_min = np.where(d == 0, -np.inf, np.minimum(t1, t2))
        t_max = np.where(d == 0, np.inf, np.maximum(t1, t2))
        t_max = np.where(parallel_outside, -np.inf, t_max)
        lo_t, hi_t = np.maximum(lo_t, t_min), np.minimum(hi_t, t_max)
    return hi_t > lo_t
