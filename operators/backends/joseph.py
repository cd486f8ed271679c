"""Joseph's projector (Joseph 1982) for 3D geometries (parallel3d, cone, vector forms) in
vectorised torch, on any device.

Each ray steps along its dominant axis (the largest direction component in voxels) one voxel
plane at a time; in each plane the volume is interpolated bilinearly between the four nearest
voxel centres (zero outside the grid) and the samples are summed times the ray length between
two planes, ``spacing / |cos|``. A chunk of rays is processed per dominant axis, plane by plane,
with ``grid_sample`` on that plane; the adjoint scatters the same weights with
``grid_sampler_2d_backward``, so ``A.T`` is the exact transpose of ``A``. Nothing is tabulated:
a chunk's entry points and per-plane steps are made from the geometry vectors on the data's
device, within ``memory_budget`` bytes. Cone rays start at the source: planes behind it are
skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..geometry import ProjectionGeometry, VolumeGeometry
from ..rays import Rays3D

DEFAULT_BUDGET_BYTES = 64 * 2**20  # per chunk of rays; larger chunks gain nothing on the CPU
_VOLUME_DIM = (3, 2, 1)  # x, y, z → the axis of a (B, Z, H, W) tensor
_OUTSIDE = 3.0  # a grid_sample coordinate whose four neighbours all lie outside the grid


@dataclass(frozen=True)
class _Group:
    """The ``R`` rays of one chunk whose dominant axis is ``axis`` (0, 1, 2 = x, y, z), laid
    out as ``parts`` equal runs of ``run`` rays (grid_sample runs its batch axis in parallel on
    the CPU; the last run is padded with rays outside the grid).

    ``index`` ``(R,)`` into the chunk's rays; ``grid``/``step`` ``(parts, run, 1, 2)``: the
    ``grid_sample`` coordinates in plane 0 and their change per plane; ``weight`` ``(R,)`` the
    ray length per plane; ``planes`` ``(parts, 1, run, 2)`` the first and last plane in front of
    the source, or None where every ray sees every plane.
    """

    axis: int
    index: torch.Tensor
    grid: torch.Tensor
    step: torch.Tensor
    weight: torch.Tensor
    planes: torch.Tensor | None

    def join(self, t: torch.Tensor) -> torch.Tensor:
        """``(parts, B, run, 1)`` → ``(B, R)``."""
        parts, batch, run, _ = t.shape
        return t.permute(1, 0, 2, 3).reshape(batch, parts * run)[:, : self.index.numel()]

    def masked(self, t: torch.Tensor, k: int) -> torch.Tensor:
        """``t`` ``(parts, B, run, 1)`` zeroed for the rays whose source lies beyond plane ``k``."""
        if self.planes is None:
            return t
        return t * ((self.planes[..., 0:1] <= k) & (self.planes[..., 1:2] >= k)).to(t.dtype)


class JosephBackend:
    """``(B, Z, H, W) ↔ (B, det_rows, n_angles, det_cols)`` by Joseph's method."""

    name = "joseph"

    def __init__(
        self, vol: VolumeGeometry, pg: ProjectionGeometry, memory_budget: int | None = None
    ):
        if pg.ndim != 3 or vol.ndim != 3:
            raise ValueError("joseph handles 3D geometries with a (Z, H, W) volume")
        if memory_budget is not None and memory_budget <= 0:
            raise ValueError(
                f"memory_budget: expected a positive number of bytes, got {memory_budget}"
            )
        self.vol, self.pg = vol, pg
        self.domain_shape = vol.shape
        self.range_shape = pg.shape
        self.budget = int(memory_budget or DEFAULT_BUDGET_BYTES)
        self.n_rays = math.prod(pg.shape)
        self._rays = Rays3D.of(vol, pg)
        ext = vol.extent[::-1]  # (x, y, z)
        self._lo = torch.tensor([e[0] for e in ext], dtype=torch.float64)
        self._spacing = torch.tensor(vol.spacing[::-1], dtype=torch.float64)
        self._count = torch.tensor(vol.shape[::-1], dtype=torch.float64)

    def _groups(self, start: int, stop: int, device, dtype) -> Iterator[_Group]:
        """The rays ``start:stop`` split by dominant axis, made in float64, given in ``dtype``;
        in as many runs as torch has threads on the CPU, one on a GPU."""
        parts = torch.get_num_threads() if torch.device(device).type == "cpu" else 1
        origin, direction = self._rays.range(start, stop, device)
        lo, spacing, count = (t.to(device) for t in (self._lo, self._spacing, self._count))
        axis_of_ray = (direction.abs() / spacing).argmax(dim=1)
        for axis in range(3):
            index = torch.nonzero(axis_of_ray == axis).squeeze(1)
            if index.numel() == 0:
                continue
            o, d = origin[index], direction[index]
            d_a = d[:, axis]
            # parameter t of plane 0 (its voxel centres) and its change per plane
            t0 = (lo[axis] + spacing[axis] / 2 - o[:, axis]) / d_a
            dt = spacing[axis] / d_a
            # grid_sample's (x, y) = the (last, first) remaining axes of the permuted volume
            other = [a for a in (0, 1, 2) if a != axis]  # x before y before z: (W, H) or (H, Z)
            scale = 2 / (count[other] * spacing[other])
            grid = (o[:, other] + t0[:, None] * d[:, other] - lo[other]) * scale - 1
            step = dt[:, None] * d[:, other] * scale
            planes = None
            if self._rays.cone:
                source = -t0 / dt  # the source's plane coordinate
                first = torch.where(dt > 0, source.ceil(), -math.inf)
                last = torch.where(dt > 0, math.inf, source.floor())
                if bool(((first > 0) | (last < count[axis] - 1)).any()):
                    planes = _runs(torch.stack([first, last], dim=1), parts)[:, None]
            yield _Group(
                axis,
                index,
                _runs(grid, parts, _OUTSIDE)[:, :, None].to(dtype),
                _runs(step, parts)[:, :, None].to(dtype),
                dt.abs().to(dtype),
                planes,
            )

    def _chunks(self, batch: int) -> Iterator[tuple[int, int]]:
        per_ray = 8 * (24 + 4 * batch)  # float64 rays and grids, the batch's samples and sums
        rays = max(1, self.budget // per_ray)
        for start in range(0, self.n_rays, rays):
            yield start, min(start + rays, self.n_rays)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Z, H, W) → (B, det_rows, n_angles, det_cols)``."""
        batch = x.shape[0]
        out = torch.zeros((batch, self.n_rays), dtype=x.dtype, device=x.device)
        stacks = {}  # the volume as planes across each dominant axis met so far
        for start, stop in self._chunks(batch):
            for g in self._groups(start, stop, x.device, x.dtype):
                if g.axis not in stacks:
                    stacks[g.axis] = x.permute(*_permutation(g.axis)).contiguous()
                parts, run = g.grid.shape[:2]
                total = x.new_zeros((parts, batch, run, 1))
                for k, plane in enumerate(stacks[g.axis]):
                    grid = torch.add(g.grid, g.step, alpha=k)
                    planes = plane[None].expand(parts, -1, -1, -1)
                    total += g.masked(F.grid_sample(planes, grid, align_corners=False), k)
                out[:, start + g.index] = g.join(total) * g.weight
        return out.reshape(batch, *self.range_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, det_rows, n_angles, det_cols) → (B, Z, H, W)``: the same weights scattered."""
        batch = y.shape[0]
        flat = y.reshape(batch, -1)
        stacks = {}  # the result as planes across each dominant axis met so far
        for start, stop in self._chunks(batch):
            for g in self._groups(start, stop, y.device, y.dtype):
                perm = _permutation(g.axis)
                if g.axis not in stacks:
                    shape = [batch, *self.domain_shape]
                    stacks[g.axis] = y.new_zeros([shape[d] for d in perm])
                stack = stacks[g.axis]
                parts = g.grid.shape[0]
                like = stack.new_zeros(()).expand(parts, *stack.shape[1:])  # shape, no memory
                weighted = (flat[:, start + g.index] * g.weight).T  # (R, B)
                weighted = _runs(weighted, parts).permute(0, 2, 1)[..., None]  # (parts, B, run, 1)
                for k in range(stack.shape[0]):
                    grid = torch.add(g.grid, g.step, alpha=k)
                    grad, _ = torch.ops.aten.grid_sampler_2d_backward(
                        g.masked(weighted, k), like, grid, 0, 0, False, [True, False]
                    )  # bilinear, zero padding, align_corners=False: as in forward
                    stack[k] += grad.sum(dim=0)
        out = y.new_zeros((batch, *self.domain_shape))
        for axis, stack in stacks.items():
            out += stack.permute(*_inverse(_permutation(axis)))
        return out


def _runs(t: torch.Tensor, parts: int, fill: float = 0.0) -> torch.Tensor:
    """``(R, c)`` → ``(parts, run, c)``, padded with ``fill`` to ``parts · run`` rows."""
    run = -(-t.shape[0] // parts)
    padded = F.pad(t, (0, 0, 0, parts * run - t.shape[0]), value=fill)
    return padded.reshape(parts, run, t.shape[1])


def _permutation(axis: int) -> tuple[int, ...]:
    """``(B, Z, H, W)`` → ``(N_axis, B, N_p, N_q)``: one image per plane across ``axis``, its
    ``(p, q)`` the remaining volume axes in order (grid_sample's y, x)."""
    dim = _VOLUME_DIM[axis]
    return (dim, 0, *(d for d in (1, 2, 3) if d != dim))


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(perm)), key=perm.__getitem__))
