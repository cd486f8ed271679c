"""Pure-torch ray marching for 3D geometries (parallel3d, cone, vector forms) on any device.

Each ray is sampled at equal steps (half the smallest voxel by default) across the volume's
bounding sphere; values come from trilinear interpolation (``grid_sample``, zero outside) and
are summed times the step. The adjoint is the vector–Jacobian product of that linear map, so
it is exact to rounding. Meant for CPU use at test sizes and as a GPU fallback without ASTRA.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import ProjectionGeometry, VolumeGeometry
from ..rays import box_hits, rays_3d

_SAMPLES_PER_CHUNK = 2**22


class RayMarchBackend:
    """``(B, Z, H, W) ↔ (B, det_rows, n_angles, det_cols)`` by sampling along every ray."""

    name = "raymarch"

    def __init__(self, vol: VolumeGeometry, pg: ProjectionGeometry, step: float | None = None):
        if pg.ndim != 3 or vol.ndim != 3:
            raise ValueError("raymarch handles 3D geometries with a (Z, H, W) volume")
        self.vol, self.pg = vol, pg
        self.domain_shape = vol.shape
        self.range_shape = pg.shape
        origin, direction = rays_3d(pg)
        if not box_hits(vol, origin, direction).any():
            raise ValueError(
                f"the projection geometry misses the volume: no ray of {pg.shape} crosses the "
                f"volume of shape {vol.shape}, spacing {vol.spacing}, center {vol.center}"
            )
        self.step = float(step or min(vol.spacing) / 2)
        center = np.array(vol.center[::-1])  # (x, y, z)
        half_diag = 0.5 * math.sqrt(
            sum((n * s) ** 2 for n, s in zip(vol.shape, vol.spacing, strict=True))
        )
        self.n_samples = int(math.ceil(2 * half_diag / self.step)) + 1
        t_center = np.einsum("...k,...k->...", center - origin, direction)
        offsets = (np.arange(self.n_samples) - (self.n_samples - 1) / 2) * self.step
        # rays ordered (rows, angles, cols); sample points normalised for grid_sample (x, y, z)
        self._origin, self._direction = origin.reshape(-1, 3), direction.reshape(-1, 3)
        self._t = t_center.reshape(-1, 1) + offsets[None, :]
        lo = np.array([e[0] for e in vol.extent[::-1]])
        hi = np.array([e[1] for e in vol.extent[::-1]])
        self._lo, self._hi = lo, hi
        self._grid_cache: dict = {}

    def _grid(self, device, dtype) -> torch.Tensor:
        key = (str(device), dtype)
        if key not in self._grid_cache:
            pts = self._origin[:, None, :] + self._t[..., None] * self._direction[:, None, :]
            norm = (pts - self._lo) / (self._hi - self._lo) * 2 - 1
            self._grid_cache = {key: torch.as_tensor(norm, dtype=dtype, device=device)}
        return self._grid_cache[key]

    def _march(self, x: torch.Tensor) -> torch.Tensor:
        grid = self._grid(x.device, x.dtype)
        n_rays = grid.shape[0]
        chunk = max(1, _SAMPLES_PER_CHUNK // self.n_samples)
        vol = x.unsqueeze(0)  # (1, B, Z, H, W): batch as channels
        out = []
        for start in range(0, n_rays, chunk):
            g = grid[start : start + chunk].reshape(1, -1, self.n_samples, 1, 3)
            samples = F.grid_sample(
                vol, g, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            out.append(samples.sum(dim=(3, 4))[0] * self.step)  # (B, rays)
        return torch.cat(out, dim=1).reshape(x.shape[0], *self.range_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._march(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        x0 = torch.zeros((y.shape[0], *self.domain_shape), dtype=y.dtype, device=y.device)
        with torch.enable_grad():
            x0.requires_grad_(True)
            (grad,) = torch.autograd.grad(self._march(x0), x0, grad_outputs=y)
        return grad
