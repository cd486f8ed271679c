"""Pure-torch system matrix for 2D geometries (Joseph interpolation), CPU and CUDA.

For every ray the dominant axis (the one along which the ray advances most, measured in
pixels) is stepped pixel by pixel; at each step the ray's crossing of that pixel line is
linearly interpolated between the two nearest pixels of the other axis (zero outside the
grid), weighted by the path length per step. This is ASTRA's ``linear`` (Joseph) kernel. The
matrix is stored as CSR together with its exact transpose (the same values), built once per
(geometry, device, dtype) and cached.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict

import numpy as np
import torch

from ..geometry import ProjectionGeometry, VolumeGeometry
from ..rays import box_hits, rays_2d

DEFAULT_BUDGET_BYTES = int(float(os.environ.get("OPERATORS_SPARSE_BUDGET_GB", "8")) * 2**30)
_RAY_CHUNK = 4096
_BATCH_BLOCK = 32


def _joseph_entries(vol: VolumeGeometry, origin: np.ndarray, direction: np.ndarray):
    """COO entries ``(ray, pixel, weight)`` for flat arrays of rays ``(R, 2)``; float64."""
    (H, W), (dy, dx) = vol.shape, vol.spacing
    (ymin, ymax), (xmin, xmax) = vol.extent
    ux, uy = direction[:, 0], direction[:, 1]
    x_major = np.abs(ux) / dx >= np.abs(uy) / dy
    rays_out, pix_out, w_out = [], [], []
    for major in (True, False):
        idx = np.nonzero(x_major == major)[0]
        if idx.size == 0:
            continue
        o, d = origin[idx], direction[idx]
        if major:  # step over columns, interpolate rows
            steps = xmin + (np.arange(W) + 0.5) * dx
            t = (steps[None, :] - o[:, :1]) / d[:, :1]
            frac = (ymax - (o[:, 1:2] + t * d[:, 1:2])) / dy - 0.5
            step_len = dx / np.abs(d[:, 0])
            n_other, stride_step, stride_other = H, 1, W
        else:  # step over rows, interpolate columns
            steps = ymax - (np.arange(H) + 0.5) * dy
            t = (steps[None, :] - o[:, 1:2]) / d[:, 1:2]
            frac = (o[:, :1] + t * d[:, :1] - xmin) / dx - 0.5
            step_len = dy / np.abs(d[:, 1])
            n_other, stride_step, stride_other = W, W, 1
        lower = np.floor(frac)
        upper_w = frac - lower
        lower = lower.astype(np.int64)
        step_idx = np.broadcast_to(np.arange(len(steps))[None, :], lower.shape)
        ray_idx = np.broadcast_to(idx[:, None], lower.shape)
        for other, weight in ((lower, 1.0 - upper_w), (lower + 1, upper_w)):
            keep = (other >= 0) & (other < n_other) & (weight > 0)
            rays_out.append(ray_idx[keep])
            pix_out.append(step_idx[keep] * stride_step + other[keep] * stride_other)
            w_out.append((weight * step_len[:, None])[keep])
    if not rays_out:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    return np.concatenate(rays_out), np.concatenate(pix_out), np.concatenate(w_out)


def estimate_bytes(vol: VolumeGeometry, pg: ProjectionGeometry, dtype: torch.dtype) -> int:
    """Upper bound on the memory of the matrix and its transpose (CSR)."""
    n_angles, det_count = pg.shape
    nnz = 2 * n_angles * det_count * max(vol.shape)
    item = torch.finfo(dtype).bits // 8
    index = 4 if nnz < 2**31 else 8
    return 2 * (nnz * (item + index) + (n_angles * det_count + vol.shape[0] * vol.shape[1]) * index)


def build_matrix(vol: VolumeGeometry, pg: ProjectionGeometry) -> tuple[np.ndarray, ...]:
    """CSR arrays ``(crow, col, val)`` of the ``(rays, pixels)`` Joseph matrix, float64."""
    origin, direction = rays_2d(pg)
    origin, direction = origin.reshape(-1, 2), direction.reshape(-1, 2)
    n_rays = origin.shape[0]
    rows, cols, vals = [], [], []
    for start in range(0, n_rays, _RAY_CHUNK):
        r, c, v = _joseph_entries(
            vol, origin[start : start + _RAY_CHUNK], direction[start : start + _RAY_CHUNK]
        )
        rows.append(r + start)
        cols.append(c)
        vals.append(v)
    rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    crow = np.zeros(n_rays + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rays), out=crow[1:])
    return crow, cols, vals


class SparseMatrix:
    """The CSR matrix ``A`` ``(rays, pixels)`` and its transpose on one device and dtype."""

    def __init__(self, crow, col, val, shape: tuple[int, int], device, dtype):
        index_dtype = torch.int32 if max(len(val), shape[0], shape[1]) < 2**31 else torch.int64
        crow_t = torch.as_tensor(crow).to(index_dtype)
        col_t = torch.as_tensor(col).to(index_dtype)
        val_t = torch.as_tensor(val, dtype=dtype)
        with warnings.catch_warnings(), torch.sparse.check_sparse_tensor_invariants(False):
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            forward = torch.sparse_csr_tensor(crow_t, col_t, val_t, size=shape)
            csc = forward.to_sparse_csc()
            transpose = torch.sparse_csr_tensor(
                csc.ccol_indices(), csc.row_indices(), csc.values(), size=(shape[1], shape[0])
            )
        self.forward = forward.to(device)
        self.transpose = transpose.to(device)
        self.nnz = len(val)

    @property
    def nbytes(self) -> int:
        total = 0
        for m in (self.forward, self.transpose):
            total += m.values().nbytes + m.col_indices().nbytes + m.crow_indices().nbytes
        return total


class _MatrixCache:
    """Process-wide LRU cache of built matrices, bounded by a byte budget."""

    def __init__(self):
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, vol, pg, device, dtype, budget: int) -> SparseMatrix:
        key = (vol, pg, str(device), dtype)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        need = estimate_bytes(vol, pg, dtype)
        if need > budget:
            raise ValueError(
                f"torch_sparse: the system matrix for volume {vol.shape} and projections "
                f"{pg.shape} needs about {need / 2**30:.2f} GiB, over the memory budget of "
                f"{budget / 2**30:.2f} GiB; raise it with memory_budget=... (or "
                "OPERATORS_SPARSE_BUDGET_GB) or use another backend"
            )
        crow, col, val = build_matrix(vol, pg)
        if len(val) == 0:
            raise ValueError(
                f"the projection geometry misses the volume: no ray of {pg.shape} crosses the "
                f"volume of shape {vol.shape}, spacing {vol.spacing}, center {vol.center}"
            )
        shape = (len(crow) - 1, vol.shape[0] * vol.shape[1])
        matrix = SparseMatrix(crow, col, val, shape, device, dtype)
        with self._lock:
            self._items[key] = matrix
            while sum(m.nbytes for m in self._items.values()) > budget and len(self._items) > 1:
                self._items.popitem(last=False)
        return matrix

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


CACHE = _MatrixCache()


class TorchSparseBackend:
    """``A``/``Aᵀ`` for a 2D geometry as sparse-dense products, batched over leading dims."""

    name = "torch_sparse"

    def __init__(
        self, vol: VolumeGeometry, pg: ProjectionGeometry, memory_budget: int | None = None
    ):
        if vol.ndim != 2 or pg.ndim != 2:
            raise ValueError("torch_sparse handles 2D geometries (applied slice-wise to volumes)")
        if not box_hits(vol, *rays_2d(pg)).any():
            raise ValueError(
                f"the projection geometry misses the volume: no ray of {pg.shape} crosses the "
                f"volume of shape {vol.shape}, spacing {vol.spacing}, center {vol.center}"
            )
        self.vol, self.pg = vol, pg
        self.budget = DEFAULT_BUDGET_BYTES if memory_budget is None else int(memory_budget)
        self.domain_shape = vol.shape
        self.range_shape = pg.shape

    def matrix(self, device, dtype) -> SparseMatrix:
        return CACHE.get(self.vol, self.pg, torch.device(device), dtype, self.budget)

    def _apply(self, m: torch.Tensor, x: torch.Tensor, out_shape) -> torch.Tensor:
        """``m @ x`` for ``x`` ``(B, ...)``, in column blocks of ``_BATCH_BLOCK`` slices
        (measured faster than one wide product on the 2-core CPU of docs/benchmarks)."""
        batch = x.shape[0]
        cols = x.reshape(batch, -1).T
        out = torch.empty((m.shape[0], batch), dtype=x.dtype, device=x.device)
        for start in range(0, batch, _BATCH_BLOCK):
            block = cols[:, start : start + _BATCH_BLOCK].contiguous()
            out[:, start : start + _BATCH_BLOCK] = m @ block
        return out.T.reshape(batch, *out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W) → (B, n_angles, det_count)``."""
        return self._apply(self.matrix(x.device, x.dtype).forward, x, self.range_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, n_angles, det_count) → (B, H, W)``."""
        return self._apply(self.matrix(y.device, y.dtype).transpose, y, self.domain_shape)
