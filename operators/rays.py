"""Rays of a projection geometry as (start point, unit direction) pairs: 2D all at once in
float64 numpy, 3D a range at a time in torch (on any device), and their clipping to the volume.

One ray per detector pixel and angle, ordered like the projection data: 2D ``(n_angles,
det_count)``, 3D ``(det_rows, n_angles, det_cols)``. For fan and cone beams the start point is
the source; for parallel beams it is the detector pixel centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .geometry import (
    ConeVecGeometry,
    FanGeometry,
    FanVecGeometry,
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


def _pixel_rays(
    vec: torch.Tensor, du: torch.Tensor, dv: torch.Tensor, cone: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(origin, direction)`` ``(..., 3)`` through the detector pixels at offsets ``du``/``dv``
    (in pixels from the centre) of views with ASTRA vectors ``vec`` ``(..., 12)``, all
    broadcast together; directions are unit vectors."""
    pixel = vec[..., 3:6] + du * vec[..., 6:9] + dv * vec[..., 9:12]
    if cone:
        direction = pixel - vec[..., 0:3]
        origin = vec[..., 0:3].expand(direction.shape)
    else:
        direction, origin = vec[..., 0:3].expand(pixel.shape), pixel
    return origin, direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True)


def rays_3d(
    vectors: torch.Tensor, det_shape: tuple[int, int], cone: bool, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(origin, direction)``, each ``(stop − start, 3)`` in (x, y, z), of the rays
    ``start:stop`` in projection-data order ``(det_rows, n_angles, det_cols)``.

    ``vectors`` ``(n_angles, 12)`` are the ASTRA vectors of a ``parallel3d_vec`` or (``cone``)
    ``cone_vec`` geometry; rays are made on their device and in their dtype.
    """
    rows, cols = det_shape
    n_angles = vectors.shape[0]
    index = torch.arange(start, stop, device=vectors.device)
    row, view, col = index // (n_angles * cols), (index // cols) % n_angles, index % cols
    du = (col - (cols - 1) / 2).to(vectors.dtype)[:, None]
    dv = (row - (rows - 1) / 2).to(vectors.dtype)[:, None]
    return _pixel_rays(vectors[view], du, dv, cone)


def slab(
    origin: torch.Tensor, direction: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit parameters ``t`` of each line ``origin + t · direction`` ``(..., D)``
    through the box ``lo < p < hi`` (broadcast against them); the line misses the box where
    ``t_out <= t_in``."""
    t1, t2 = (lo - origin) / direction, (hi - origin) / direction
    inside = (origin > lo) & (origin < hi)
    flat = direction == 0
    inf = torch.full_like(t1, math.inf)
    t_min = torch.where(flat, torch.where(inside, -inf, inf), torch.minimum(t1, t2))
    t_max = torch.where(flat, torch.where(inside, inf, -inf), torch.maximum(t1, t2))
    return t_min.amax(dim=-1), t_max.amin(dim=-1)


def clip_to_box(
    vol: VolumeGeometry, origin: torch.Tensor, direction: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``slab`` of each line through the volume's bounding box.

    ``origin``/``direction`` ``(..., 2)`` in (x, y) or ``(..., 3)`` in (x, y, z).
    """
    ext = vol.extent[::-1]  # x first
    lo = origin.new_tensor([e[0] for e in ext])
    hi = origin.new_tensor([e[1] for e in ext])
    return slab(origin, direction, lo, hi)


def box_hits(vol: VolumeGeometry, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Boolean mask of the lines (numpy rays, as ``rays_2d`` makes) that cross the volume."""
    t_in, t_out = clip_to_box(vol, torch.from_numpy(origin), torch.from_numpy(direction))
    return (t_out > t_in).numpy()


_HIT_CHUNK = 2**16  # rays per chunk of the construction-time check that some ray hits (~20 MiB)


@dataclass(frozen=True)
class Rays3D:
    """The rays of a 3D geometry that crosses ``vol``: its ASTRA ``vectors`` ``(n_angles, 12)``
    (float64, CPU), ``det_shape`` (rows, cols) and whether they start at a source (``cone``)."""

    vectors: torch.Tensor
    det_shape: tuple[int, int]
    cone: bool

    @classmethod
    def of(cls, vol: VolumeGeometry, pg: ProjectionGeometry) -> Rays3D:
        """The rays of ``pg``; a ValueError where none crosses the volume."""
        vec = pg.to_vec()
        rays = cls(
            torch.tensor(vec.vectors, dtype=torch.float64),
            vec.det_shape,
            isinstance(vec, ConeVecGeometry),
        )
        if not rays._some_hit(vol):
            raise ValueError(
                f"the projection geometry misses the volume: no ray of {pg.shape} crosses the "
                f"volume of shape {vol.shape}, spacing {vol.spacing}, center {vol.center}"
            )
        return rays

    @property
    def count(self) -> int:
        return self.det_shape[0] * self.vectors.shape[0] * self.det_shape[1]

    def range(self, start: int, stop: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``rays_3d`` of the rays ``start:stop``, made in float64 on ``device``."""
        return rays_3d(self.vectors.to(device), self.det_shape, self.cone, start, stop)

    def block(self, views: torch.Tensor, rows: range, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(origin, direction)`` ``(len(rows), len(views), det_cols, 3)`` in float64 on
        ``device``: the rays of the detector ``rows`` in the views ``views`` (indices)."""
        n_rows, n_cols = self.det_shape
        vec = self.vectors.to(device)[views.to(device)][None, :, None]
        du = torch.arange(n_cols, device=device, dtype=torch.float64) - (n_cols - 1) / 2
        dv = torch.arange(rows.start, rows.stop, device=device, dtype=torch.float64)
        dv = dv - (n_rows - 1) / 2
        return _pixel_rays(vec, du[None, None, :, None], dv[:, None, None, None], self.cone)

    def _some_hit(self, vol: VolumeGeometry) -> bool:
        for start in range(0, self.count, _HIT_CHUNK):
            origin, direction = self.range(start, min(start + _HIT_CHUNK, self.count), "cpu")
            t_in, t_out = clip_to_box(vol, origin, direction)
            if self.cone:
                t_in = t_in.clamp_min(0)
            if bool((t_out > t_in).any()):
                return True
        return False
