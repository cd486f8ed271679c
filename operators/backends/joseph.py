"""Joseph's projector (Joseph 1982) for 3D geometries (parallel3d, cone, vector forms) in
vectorised torch, on any device.

Each ray steps along its dominant axis (the largest direction component in voxels) one voxel
plane at a time; in each plane the volume is interpolated bilinearly between the four nearest
voxel centres (zero outside the grid) and the samples are summed times the ray length between
two planes, ``spacing / |cos|``. The rays of a block of views are sorted by dominant axis and by
the planes they can touch, so that plane ``k`` is sampled with ``grid_sample`` by one window of
rays only (the rays that miss the grid or have not yet entered it are skipped); the adjoint
scatters the same weights with ``grid_sampler_2d_backward``, so ``A.T`` is the exact transpose
of ``A``. Cone rays start at the source: where a source lies near the grid, samples behind it
are masked.

Views that are quarter turns of one another about the volume's vertical axis (a circular scan
with a multiple of 4 views, on a square grid centred on the axis) share their rays: the
volume is turned instead, and the four turns go through ``grid_sample`` as channels of one
call, which costs much less than four calls.

A block's rays are made from the geometry vectors on the data's device, in float64, within
``memory_budget`` bytes (default 64 MiB); their sorted plane-0 coordinates, steps and weights
(about 28 bytes per ray and turn orbit) are kept for the next call while they fit in that
budget, else made anew block by block. Beyond that the working memory is the output and, per
dominant axis met, one copy of the volume per quarter turn and batch item (docs/operators.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.spatial
import torch
import torch.nn.functional as F

from ..geometry import ProjectionGeometry, VolumeGeometry
from ..rays import Rays3D, slab

DEFAULT_BUDGET_BYTES = (
    64 * 2**20
)  # per block of rays; larger blocks gain nothing on the CPU
_SETUP_BYTES = 512  # float64 set-up temporaries of one ray (measured peak ~450)
_VOLUME_DIM = (3, 2, 1)  # x, y, z → the axis of a (B, Z, H, W) tensor
_OTHER = ((1, 2), (0, 2), (0, 1))  # grid_sample's (x, y) world axes per dominant axis
_OUTSIDE = (
    3.0  # a grid_sample coordinate whose four neighbours all lie outside the grid
)


@dataclass(frozen=True)
class _Group:
    """The ``R`` rays of one block whose dominant axis is ``axis`` (0, 1, 2 = x, y, z), sorted
    so that the rays that can meet plane ``k`` are the slots ``windows[k] = (a, b)``, and dealt
    round-robin into ``parts`` runs (one per thread on the CPU; the last slots are padded with
    rays outside the grid).

    ``index`` ``(R,)`` into the block's rays; ``grid``/``step`` ``(parts, run, 1, 2)``: the
    ``grid_sample`` coordinates in plane 0 and their change per plane; ``weight`` ``(R,)`` the
    ray length per plane; ``planes`` ``(parts, 1, run, 2)`` the first and last plane in front of
    the source, or None where no source lies close enough to the grid to matter.
    """

    axis: int
    index: torch.Tensor
    grid: torch.Tensor
    step: torch.Tensor
    weight: torch.Tensor
    windows: list[tuple[int, int]]
    planes: torch.Tensor | None

    @property
    def nbytes(self) -> int:
        tensors = (self.index, self.grid, self.step, self.weight, self.planes)
        return sum(t.nbytes for t in tensors if t is not None)

    def join(self, t: torch.Tensor) -> torch.Tensor:
        """``(parts, B, run, 1)`` → ``(B, R)``."""
        parts, batch, run, _ = t.shape
        return t.permute(1, 2, 0, 3).reshape(batch, run * parts)[
            :, : self.index.numel()
        ]

    def deal(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, R)`` → ``(parts, B, run, 1)``, the inverse of ``join``."""
        return _deal(t.T, self.grid.shape[0]).permute(0, 2, 1)[..., None]

    def masked(
        self, t: torch.Tensor, k: int, a: int, b: int, part: int
    ) -> torch.Tensor:
        """``t`` ``(1, B, b − a, 1)`` of the slots ``a:b`` of ``part``, zeroed for the rays whose
        source lies beyond plane ``k``."""
        if self.planes is None:
            return t
        p = self.planes[part : part + 1, :, a:b]
        return t * ((p[..., 0:1] <= k) & (p[..., 1:2] >= k)).to(t.dtype)


class JosephBackend:
    """``(B, Z, H, W) ↔ (B, det_rows, n_angles, det_cols)`` by Joseph's method."""

    name = "joseph"

    def __init__(
        self,
        vol: VolumeGeometry,
        pg: ProjectionGeometry,
        memory_budget: int | None = None,
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
        self._rays = Rays3D.of(vol, pg)
        #: ``(V / turns, turns)``: row ``r`` lists view ``orbits[r, 0]`` turned 0..turns−1 times
        self.orbits = quarter_turns(vol, self._rays)
        ext = vol.extent[::-1]  # (x, y, z)
        self._lo = torch.tensor([e[0] for e in ext], dtype=torch.float64)
        self._spacing = torch.tensor(vol.spacing[::-1], dtype=torch.float64)
        self._count = torch.tensor(vol.shape[::-1], dtype=torch.float64)
        self._kept: dict = {}  # the last plan that fitted in the budget, by its key

    def _plan(
        self, batch: int, device, dtype, parts: int
    ) -> Iterable[tuple[slice, range, list[_Group]]]:
        """Each block of rays with its groups: those of an earlier call with the same batch,
        device, dtype and parts where they fitted in the budget, else made anew."""
        key = (batch, torch.device(device), dtype, parts)
        return self._kept[key] if key in self._kept else self._make_plan(key)

    def _make_plan(self, key) -> Iterator[tuple[slice, range, list[_Group]]]:
        batch, device, dtype, parts = key
        kept, size = [], 0
        for block, rows in self._blocks(batch):
            groups = list(self._groups(block, rows, device, dtype, parts))
            size += sum(g.nbytes for g in groups)
            kept = kept if kept is not None and size <= self.budget else None
            if kept is not None:
                kept.append((block, rows, groups))
            yield block, rows, groups
        if kept is not None:
            self._kept = {key: kept}

    def _blocks(self, batch: int) -> Iterator[tuple[slice, range]]:
        """Rows of ``orbits`` and detector rows of each block of rays within the budget."""
        rows, cols = self._rays.det_shape
        per_ray = (
            _SETUP_BYTES + 16 * batch * self.orbits.shape[1]
        )  # set-up; samples and sums
        rays = max(1, self.budget // per_ray)
        n = self.orbits.shape[0]
        if rays >= rows * cols:
            step = rays // (rows * cols)
            for v in range(0, n, step):
                yield slice(v, min(v + step, n)), range(rows)
            return
        step = max(1, rays // cols)
        for v in range(n):
            for r in range(0, rows, step):
                yield slice(v, v + 1), range(r, min(r + step, rows))

    def _ray_table(self, origin: torch.Tensor, direction: torch.Tensor):
        """Per ray of ``(R, 3)`` unit rays (float64): the dominant axis ``(R,)``, the
        ``grid_sample`` coordinates in plane 0 and their change per plane ``(R, 2)``, the ray
        length per plane ``(R,)``, the first and last plane it can touch (conservative by one
        plane; none where first > last) and whether its source cuts that range ``(R,)``."""
        lo, spacing, count = (
            t.to(origin.device) for t in (self._lo, self._spacing, self._count)
        )
        axis = (direction.abs() / spacing).argmax(dim=1, keepdim=True)
        d_a = direction.gather(1, axis)
        t0 = (
            lo[axis] + spacing[axis] / 2 - origin.gather(1, axis)
        ) / d_a  # plane 0's centres
        dt = spacing[axis] / d_a  # per plane
        other = torch.tensor(_OTHER, device=origin.device)[axis[:, 0]]
        n = count[other]
        c0 = origin.gather(1, other) + t0 * direction.gather(1, other) - lo[other]
        c0 = c0 / spacing[other] - 0.5  # voxel-index coordinates in plane 0
        dc = dt * direction.gather(1, other) / spacing[other]
        t_in, t_out = slab(
            c0, dc, torch.full_like(n, -1.0), n
        )  # bilinear support: (−1, n)
        planes = count[axis[:, 0]]
        first = torch.clamp(t_in.floor(), min=torch.zeros_like(planes), max=planes)
        last = torch.clamp(t_out.ceil(), min=-torch.ones_like(planes), max=planes - 1)
        bound = torch.zeros_like(first, dtype=torch.bool)
        if self._rays.cone:
            source, ahead = (-t0 / dt)[:, 0], dt[:, 0] > 0
            s_first = torch.where(ahead, source.ceil(), -math.inf)
            s_last = torch.where(ahead, math.inf, source.floor())
            bound = (s_first > first) | (s_last < last)
            first, last = torch.maximum(first, s_first), torch.minimum(last, s_last)
        grid, step = (2 * c0 + 1) / n - 1, 2 * dc / n
        return axis[:, 0], grid, step, dt.abs()[:, 0], first, last, bound

    def _groups(
        self, block: slice, rows: range, device, dtype, parts: int
    ) -> Iterator[_Group]:
        """The rays of one block (``_blocks``), by dominant axis, in ``parts`` runs.

        Rays are sorted by the plane where their window opens: rays nearer plane 0 than plane
        ``n − 1`` ("rear" rays) by their last plane, before the others by their first, so that
        the rays that can meet plane ``k`` are contiguous: the rear rays whose last plane is at
        least ``k`` and the others whose first plane is at most ``k``."""
        origin, direction = self._rays.block(self.orbits[block, 0], rows, device)
        table = self._ray_table(origin.reshape(-1, 3), direction.reshape(-1, 3))
        axis, grid, step, weight, first, last, bound = table
        planes = self._count.to(device)[axis]
        width = max(self.vol.shape)
        key = torch.where(first < planes - 1 - last, last - planes, first).long()
        key = torch.where(
            first <= last, axis * 2 * width + key + width, 6 * width
        )  # misses last
        key, order = torch.sort(key, stable=True)
        edges = torch.searchsorted(
            key, torch.arange(4, device=device) * 2 * width
        ).tolist()
        for a in range(3):
            index = order[edges[a] : edges[a + 1]]
            if index.numel() == 0:
                continue
            n = self.vol.shape[_VOLUME_DIM[a] - 1]
            opens = key[edges[a] : edges[a + 1]] - (a * 2 * width + width)
            k = torch.arange(n, device=device)
            start = torch.searchsorted(opens, k - n) // parts
            stop = -(-torch.searchsorted(opens, k, right=True) // parts)
            masked = bool(bound[index].any())
            yield _Group(
                a,
                index,
                _deal(grid[index], parts, _OUTSIDE)[:, :, None].to(dtype),
                _deal(step[index], parts)[:, :, None].to(dtype),
                weight[index].to(dtype),
                list(zip(start.tolist(), stop.tolist(), strict=True)),
                _deal(torch.stack([first, last], 1)[index], parts)[:, None]
                if masked
                else None,
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Z, H, W) → (B, det_rows, n_angles, det_cols)``."""
        parts = _parts(x.device)
        with _own_threads(parts) as pool:
            return self._forward(x, parts, pool)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, det_rows, n_angles, det_cols) → (B, Z, H, W)``: the same weights scattered."""
        parts = _parts(y.device)
        with _own_threads(parts) as pool:
            return self._adjoint(y, parts, pool)

    def _forward(self, x: torch.Tensor, parts: int, pool) -> torch.Tensor:
        turns = self.orbits.shape[1]
        volumes = _turned(x, turns)  # (B · turns, Z, H, W)
        out = x.new_zeros((x.shape[0], *self.range_shape))
        stacks = {}  # the volumes as planes across each dominant axis met so far
        for block, rows, groups in self._plan(x.shape[0], x.device, x.dtype, parts):
            values = x.new_zeros(
                (volumes.shape[0], len(rows) * self._block_rays(block))
            )
            for g in groups:
                if g.axis not in stacks:
                    stacks[g.axis] = volumes.permute(*_permutation(g.axis)).contiguous()
                values[:, g.index] = (
                    g.join(_project(g, stacks[g.axis], pool)) * g.weight
                )
            values = values.reshape(
                x.shape[0], turns, len(rows), -1, self._rays.det_shape[1]
            )
            for c in range(turns):
                out[:, rows.start : rows.stop, self.orbits[block, c]] = values[:, c]
        return out

    def _adjoint(self, y: torch.Tensor, parts: int, pool) -> torch.Tensor:
        turns = self.orbits.shape[1]
        channels = y.shape[0] * turns
        stacks = {}  # per part, the result as planes across each dominant axis met so far
        for block, rows, groups in self._plan(y.shape[0], y.device, y.dtype, parts):
            part = y[:, rows.start : rows.stop]
            values = torch.stack(
                [part[:, :, self.orbits[block, c]] for c in range(turns)], 1
            )
            values = values.reshape(channels, -1)
            for g in groups:
                if g.axis not in stacks:
                    shape = [channels, *self.domain_shape]
                    shape = [parts] + [shape[d] for d in _permutation(g.axis)]
                    stacks[g.axis] = y.new_zeros(shape)
                _scatter(g, g.deal(values[:, g.index] * g.weight), stacks[g.axis], pool)
        out = y.new_zeros((channels, *self.domain_shape))
        for axis, stack in stacks.items():
            out += stack.sum(dim=0).permute(*_inverse(_permutation(axis)))
        return _unturned(out, turns)

    def _block_rays(self, block: slice) -> int:
        """Rays per detector row of a block: its views times the detector columns."""
        return (
            len(range(*block.indices(self.orbits.shape[0]))) * self._rays.det_shape[1]
        )


def _parts(device) -> int:
    """Runs of rays per group: one per torch thread on the CPU, one on a GPU."""
    return torch.get_num_threads() if torch.device(device).type == "cpu" else 1


@contextmanager
def _own_threads(parts: int) -> Iterator[ThreadPoolExecutor | None]:
    """A pool of ``parts`` threads that each run one part's plane loop, torch's intra-op pool
    held at one thread meanwhile (process-wide): the parts never meet at an OpenMP barrier,
    which stalls each plane whenever another process holds a core. None for one part."""
    if parts == 1:
        yield None
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(parts) as pool:
            yield pool
    finally:
        torch.set_num_threads(before)


def _each_part(work, parts: int, pool: ThreadPoolExecutor | None) -> None:
    """``work(part)`` for every part, on the pool's threads where there is one."""
    if pool is None:
        for part in range(parts):
            work(part)
        return
    for done in [pool.submit(work, part) for part in range(parts)]:
        done.result()


def _planes(g: _Group, part: int) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """``(k, a, b, grid)`` for each plane ``k`` that the slots ``a:b`` of ``part`` meet: their
    ``grid_sample`` coordinates ``(1, b − a, 1, 2)`` in that plane (one buffer, reused)."""
    buffer = torch.empty_like(g.grid[part : part + 1])
    for k, (a, b) in enumerate(g.windows):
        if a < b:
            start, step = g.grid[part : part + 1, a:b], g.step[part : part + 1, a:b]
            yield k, a, b, torch.add(start, step, alpha=k, out=buffer[:, : b - a])


def _project(
    g: _Group, stack: torch.Tensor, pool: ThreadPoolExecutor | None
) -> torch.Tensor:
    """Sums ``(parts, C, run, 1)`` of the group's samples of ``stack`` ``(N_axis, C, N_p,
    N_q)``, plane by plane over each plane's window of rays, part by part."""
    parts, run = g.grid.shape[:2]
    total = stack.new_zeros((parts, stack.shape[1], run, 1))

    def work(p: int) -> None:
        for k, a, b, grid in _planes(g, p):
            sample = F.grid_sample(stack[k][None], grid, align_corners=False)
            total[p : p + 1, :, a:b] += g.masked(sample, k, a, b, p)

    _each_part(work, parts, pool)
    return total


def _scatter(
    g: _Group,
    weighted: torch.Tensor,
    stack: torch.Tensor,
    pool: ThreadPoolExecutor | None,
) -> None:
    """Adds the adjoint of ``_project`` of ``weighted`` ``(parts, C, run, 1)`` into ``stack``
    ``(parts, N_axis, C, N_p, N_q)``, each part into its own."""
    parts = g.grid.shape[0]
    like = stack.new_zeros(()).expand(1, *stack.shape[2:])  # shape, no memory

    def work(p: int) -> None:
        for k, a, b, grid in _planes(g, p):
            values = g.masked(weighted[p : p + 1, :, a:b], k, a, b, p)
            grad, _ = torch.ops.aten.grid_sampler_2d_backward(
                values, like, grid, 0, 0, False, [True, False]
            )  # bilinear, zero padding, align_corners=False: as in forward
            stack[p, k] += grad[0]

    _each_part(work, parts, pool)


def quarter_turns(vol: VolumeGeometry, rays: Rays3D) -> torch.Tensor:
    """The views as orbits of quarter turns about the vertical axis through the volume's centre:
    ``(V / 4, 4)``, row ``r`` the view ``orbits[r, 0]`` and its turns by 90°, 180°, 270°
    (``(x, y) → (−y, x)``); ``(V, 1)``, every view alone, unless the grid is square in ``(y,
    x)`` and every view's turns are views too (to 1e-9 of the geometry's scale)."""
    n_views = rays.vectors.shape[0]
    alone = torch.arange(n_views)[:, None]
    (_, ny, nx), (_, sy, sx) = vol.shape, vol.spacing
    if ny != nx or sy != sx or n_views % 4:
        return alone
    vec = rays.vectors.numpy().reshape(n_views, 4, 3).copy()
    points = [0, 1] if rays.cone else [1]  # source and detector centre; directions stay
    vec[:, points] -= np.asarray(vol.center[::-1])
    turned = [vec]
    for _ in range(3):
        v = turned[-1]
        turned.append(np.stack([-v[..., 1], v[..., 0], v[..., 2]], axis=-1))
    tree = scipy.spatial.cKDTree(vec.reshape(n_views, 12))
    tol = 1e-9 * max(1.0, float(np.abs(vec).max()))
    orbit = []
    for v in turned:
        dist, index = tree.query(v.reshape(n_views, 12), distance_upper_bound=tol)
        if not np.isfinite(dist).all():
            return alone
        orbit.append(index)
    orbit = np.stack(orbit, axis=1)
    first = orbit[orbit.min(axis=1) == np.arange(n_views)]
    if first.size != n_views or np.unique(first).size != n_views:
        return alone
    return torch.from_numpy(first)


def _turned(x: torch.Tensor, turns: int) -> torch.Tensor:
    """``(B, Z, H, W)`` → ``(B · turns, Z, H, W)``, item ``b · turns + c`` the volume ``x[b]``
    sampled at points turned by ``c`` quarter turns (the volume a turned view sees)."""
    if turns == 1:
        return x
    return torch.stack([torch.rot90(x, c, (-2, -1)) for c in range(turns)], 1).flatten(
        0, 1
    )


def _unturned(t: torch.Tensor, turns: int) -> torch.Tensor:
    """The adjoint of ``_turned``: ``(B · turns, Z, H, W)`` → ``(B, Z, H, W)``."""
    if turns == 1:
        return t
    t = t.unflatten(0, (-1, turns))
    out = t[:, 0].clone()
    for c in range(1, turns):
        out += torch.rot90(t[:, c], -c, (-2, -1))
    return out


def _deal(t: torch.Tensor, parts: int, fill: float = 0.0) -> torch.Tensor:
    """``(R, c)`` → ``(parts, run, c)``: row ``i`` to part ``i % parts``, slot ``i // parts``;
    padded with ``fill`` to ``parts · run`` rows."""
    run = -(-t.shape[0] // parts)
    padded = F.pad(t, (0, 0, 0, parts * run - t.shape[0]), value=fill)
    return padded.reshape(run, parts, t.shape[1]).transpose(0, 1).contiguous()


def _permutation(axis: int) -> tuple[int, ...]:
    """``(B, Z, H, W)`` → ``(N_axis, B, N_p, N_q)``: one image per plane across ``axis``, its
    ``(p, q)`` the remaining volume axes in order (grid_sample's y, x)."""
    dim = _VOLUME_DIM[axis]
    return (dim, 0, *(d for d in (1, 2, 3) if d != dim))


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(perm)), key=perm.__getitem__))
