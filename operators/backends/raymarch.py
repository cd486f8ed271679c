"""Pure-torch ray marching for 3D geometries (parallel3d, cone, vector forms) on any device.

Each ray is clipped to the volume's bounding box and sampled at the midpoints of equal steps
across it (at most ``step``, half the smallest voxel by default); values come from trilinear
interpolation (``grid_sample``, zero outside) and are summed times the step. Sample points are
made a chunk of rays at a time on the data's device, within ``memory_budget`` bytes (default
256 MiB on the CPU, 2 GiB on a GPU, where fewer, larger chunks launch fewer kernels), and the
adjoint is the vector–Jacobian product of each chunk, so it is exact to rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..geometry import ProjectionGeometry, VolumeGeometry
from ..rays import Rays3D, clip_to_box

DEFAULT_BUDGET_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}  # per device type


class RayMarchBackend:
    """``(B, Z, H, W) ↔ (B, det_rows, n_angles, det_cols)`` by sampling along every ray."""

    name = "raymarch"

    def __init__(
        self,
        vol: VolumeGeometry,
        pg: ProjectionGeometry,
        step: float | None = None,
        memory_budget: int | None = None,
    ):
        if pg.ndim != 3 or vol.ndim != 3:
            raise ValueError("raymarch handles 3D geometries with a (Z, H, W) volume")
        self.vol, self.pg = vol, pg
        self.domain_shape = vol.shape
        self.range_shape = pg.shape
        self.step = float(step or min(vol.spacing) / 2)
        self.budget = None if memory_budget is None else int(memory_budget)
        if self.budget is not None and self.budget <= 0:
            raise ValueError(
                f"memory_budget: expected a positive number of bytes, got {memory_budget}"
            )
        diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(vol.shape, vol.spacing, strict=True)))
        self.max_samples = math.ceil(diagonal / self.step) + 1
        self.n_rays = math.prod(pg.shape)
        self._rays = Rays3D.of(vol, pg)
        ext = vol.extent[::-1]  # (x, y, z)
        self._lo = torch.tensor([e[0] for e in ext], dtype=torch.float64)
        self._size = torch.tensor([e[1] - e[0] for e in ext], dtype=torch.float64)

    def _segments(self, start: int, stop: int, device: torch.device):
        """Entry point, direction (normalised grid units), per-ray step and sample count."""
        origin, direction = self._rays.range(start, stop, device)
        t_in, t_out = clip_to_box(self.vol, origin, direction)
        if self._rays.cone:  # rays start at the source
            t_in = t_in.clamp_min(0)
        length = (t_out - t_in).clamp_min(0)
        count = torch.ceil(length / self.step)
        lo, size = self._lo.to(device), self._size.to(device)
        entry = (origin + t_in[:, None] * direction - lo) / size * 2 - 1
        return entry, direction / size * 2, length / count.clamp_min(1), count

    def _chunks(self, batch: int, device: torch.device, dtype: torch.dtype):
        """``(start, stop, grid (1, 1, R, S, 3), weight (R, S))`` per chunk of rays."""
        per_sample = (16 + 2 * batch) * torch.finfo(dtype).bits // 8
        budget = self.budget or DEFAULT_BUDGET_BYTES.get(device.type, DEFAULT_BUDGET_BYTES["cpu"])
        rays = max(1, budget // (self.max_samples * per_sample))
        for start in range(0, self.n_rays, rays):
            stop = min(start + rays, self.n_rays)
            entry, direction, step, count = self._segments(start, stop, device)
            samples = int(count.max())
            if samples == 0:
                continue
            k = torch.arange(samples, device=device, dtype=torch.float64) + 0.5
            offset = (k[None, :] * step[:, None]).to(dtype)  # (R, S) from the entry point
            grid = entry.to(dtype)[:, None, :] + offset[..., None] * direction.to(dtype)[:, None, :]
            weight = torch.where(k[None, :] < count[:, None], step[:, None], 0.0).to(dtype)
            yield start, stop, grid[None, None], weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Z, H, W) → (B, det_rows, n_angles, det_cols)``."""
        out = torch.zeros((x.shape[0], self.n_rays), dtype=x.dtype, device=x.device)
        vol = x.unsqueeze(0)  # (1, B, Z, H, W): batch as channels
        for start, stop, grid, weight in self._chunks(x.shape[0], x.device, x.dtype):
            samples = F.grid_sample(vol, grid, padding_mode="zeros", align_corners=False)
            out[:, start:stop] = (samples[0, :, 0] * weight).sum(dim=-1)
        return out.reshape(x.shape[0], *self.range_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, det_rows, n_angles, det_cols) → (B, Z, H, W)``: the backward of each chunk's
        ``grid_sample`` with respect to the volume (its forward is not needed)."""
        flat = y.reshape(y.shape[0], -1)
        shape = (1, y.shape[0], *self.domain_shape)
        out = torch.zeros(shape, dtype=y.dtype, device=y.device)
        like = out.new_zeros(()).expand(shape)  # the input's shape and dtype, no memory
        for start, stop, grid, weight in self._chunks(y.shape[0], y.device, y.dtype):
            cotangent = (flat[:, start:stop, None] * weight)[None, :, None]
            grad, _ = torch.ops.aten.grid_sampler_3d_backward(
                cotangent, like, grid, 0, 0, False, [True, False]
            )  # bilinear, zero padding, align_corners=False: as in forward
            out += grad
        return out[0]
