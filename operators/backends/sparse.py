"""The system matrix of 2D geometries (Joseph interpolation) as torch CSR, CPU and CUDA.

For every ray the dominant axis (the one along which the ray advances most, measured in
pixels) is stepped pixel by pixel; at each step the ray's crossing of that pixel line is
linearly interpolated between the two nearest pixels of the other axis (zero outside the
grid), weighted by the path length per step. This is ASTRA's ``linear`` (Joseph) kernel. The
matrix is built vectorised in torch on the data's device (each ray's entries already in pixel
order, so no sort but the one that makes the transpose), stored as CSR together with its exact
transpose (the same values) and cached per (geometry, device, dtype) in memory and, when
``OPERATORS_SPARSE_CACHE_DIR`` is set, on disk keyed by the geometry.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import scipy.sparse
import torch

from ..geometry import ProjectionGeometry, VolumeGeometry
from ..rays import box_hits, rays_2d

DEFAULT_BUDGET_BYTES = int(float(os.environ.get("OPERATORS_SPARSE_BUDGET_GB", "8")) * 2**30)
_RAY_CHUNK = 8192
_BATCH_BLOCK = 32
_FORMAT = 2  # version of the Joseph matrix layout in the disk cache


def _ordered_x_major(lower: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots ``(R, S)`` of the lower and upper entries of rays that step over columns, so that
    each ray's ``2S`` entries are in row-major pixel order (CSR needs sorted columns).

    ``lower`` ``(R, S)`` is the lower row at each column step; it is monotone along a ray and
    changes by at most one per step, so the entries form runs (blocks of equal ``lower``) whose
    sorted positions follow from the block starts and ends, without a sort.
    """
    n_rays, steps = lower.shape
    s = torch.arange(steps, device=lower.device, dtype=torch.int64).expand(n_rays, steps)
    new = torch.ones_like(lower, dtype=torch.bool)
    new[:, 1:] = lower[:, 1:] != lower[:, :-1]
    start = torch.cummax(torch.where(new, s, 0), dim=1).values  # first step of the block
    last = torch.ones_like(new)
    last[:, :-1] = new[:, 1:]
    end = torch.where(last, s + 1, steps).flip(1).cummin(dim=1).values.flip(1)  # one past it
    # decreasing rows: blocks sorted from the last one back; needs the next block's end and
    # the previous block's start
    next_end = torch.gather(torch.cat([end, end.new_full((n_rays, 1), steps)], 1), 1, end)
    prev_start = torch.gather(start, 1, (start - 1).clamp_min(0))
    rising = (lower[:, -1:] >= lower[:, :1]).expand(n_rays, steps)
    lo_up = (start + s, end + s)
    lo_down = (2 * steps - end - next_end + s - start, 2 * steps - end - prev_start + s - start)
    return torch.where(rising, lo_up[0], lo_down[0]), torch.where(rising, lo_up[1], lo_down[1])


def _joseph_entries(vol: VolumeGeometry, origin: torch.Tensor, direction: torch.Tensor):
    """``(count (R,), pixel, weight)`` of rays ``(R, 2)`` (float64): each ray's entries in
    increasing pixel order, rays one after another."""
    (H, W), (dy, dx) = vol.shape, vol.spacing
    (ymin, ymax), (xmin, xmax) = vol.extent
    n_rays, device = origin.shape[0], origin.device
    x_major = direction[:, 0].abs() / dx >= direction[:, 1].abs() / dy
    groups = []
    for major in (True, False):
        idx = torch.nonzero(x_major == major).flatten()
        if idx.numel() == 0:
            continue
        o, d = origin[idx], direction[idx]
        if major:  # step over columns, interpolate rows
            steps = xmin + (torch.arange(W, device=device, dtype=torch.float64) + 0.5) * dx
            t = (steps[None, :] - o[:, :1]) / d[:, :1]
            frac = (ymax - (o[:, 1:2] + t * d[:, 1:2])) / dy - 0.5
            step_len = dx / d[:, 0].abs()
            n_other, stride_step, stride_other = H, 1, W
        else:  # step over rows, interpolate columns
            steps = ymax - (torch.arange(H, device=device, dtype=torch.float64) + 0.5) * dy
            t = (steps[None, :] - o[:, 1:2]) / d[:, 1:2]
            frac = (o[:, :1] + t * d[:, :1] - xmin) / dx - 0.5
            step_len = dy / d[:, 1].abs()
            n_other, stride_step, stride_other = W, W, 1
        lower_f = torch.floor(frac)
        upper_w = (frac - lower_f) * step_len[:, None]
        lower = lower_f.to(torch.int32)
        step_idx = torch.arange(lower.shape[1], device=device, dtype=torch.int32)[None, :]
        pixels, weights = [], []
        for other, w in ((lower, step_len[:, None] - upper_w), (lower + 1, upper_w)):
            inside = (other >= 0) & (other < n_other)
            pixels.append(step_idx * stride_step + other.clamp(0, n_other - 1) * stride_other)
            weights.append(torch.where(inside, w, 0.0))
        n = 2 * lower.shape[1]
        if major:  # the slots are a permutation of the 2S entries of each ray
            group_pixel = torch.empty((len(idx), n), dtype=torch.int32, device=device)
            group_weight = torch.empty((len(idx), n), dtype=torch.float64, device=device)
            for slot, p, w in zip(_ordered_x_major(lower), pixels, weights, strict=True):
                group_pixel.scatter_(1, slot, p)
                group_weight.scatter_(1, slot, w)
        else:  # rows ascending, and the two columns of a step side by side
            group_pixel = torch.stack(pixels, dim=2).reshape(len(idx), n)
            group_weight = torch.stack(weights, dim=2).reshape(len(idx), n)
        groups.append((idx, group_pixel, group_weight))
    if len(groups) == 1:  # one kind of ray (a chunk of views of one orientation)
        _, pixel, weight = groups[0]
    else:
        width = max(g[1].shape[1] for g in groups)
        pixel = torch.zeros((n_rays, width), dtype=torch.int32, device=device)
        weight = torch.zeros((n_rays, width), dtype=torch.float64, device=device)
        for idx, group_pixel, group_weight in groups:
            pixel[idx, : group_pixel.shape[1]] = group_pixel
            weight[idx, : group_weight.shape[1]] = group_weight
    keep = weight > 0
    return keep.sum(dim=1), pixel[keep], weight[keep]


def build_matrix(vol: VolumeGeometry, pg: ProjectionGeometry, device="cpu"):
    """CSR arrays ``(crow, col, val)`` of the ``(rays, pixels)`` Joseph matrix (int64 row
    pointers, int32 columns, float64 values), built on ``device`` a chunk of rays at a time."""
    origin, direction = (torch.as_tensor(a.reshape(-1, 2), device=device) for a in rays_2d(pg))
    counts, cols, vals = [], [], []
    for start in range(0, origin.shape[0], _RAY_CHUNK):
        c, p, w = _joseph_entries(
            vol, origin[start : start + _RAY_CHUNK], direction[start : start + _RAY_CHUNK]
        )
        counts.append(c)
        cols.append(p)
        vals.append(w)
    crow = torch.zeros(origin.shape[0] + 1, dtype=torch.int64, device=device)
    torch.cumsum(torch.cat(counts), dim=0, out=crow[1:])
    return crow, torch.cat(cols), torch.cat(vals)


def estimate_bytes(vol: VolumeGeometry, pg: ProjectionGeometry, dtype: torch.dtype) -> int:
    """Upper bound on the memory of the matrix and its transpose (CSR)."""
    n_angles, det_count = pg.shape
    nnz = 2 * n_angles * det_count * max(vol.shape)
    item = torch.finfo(dtype).bits // 8
    index = 4 if nnz < 2**31 else 8
    return 2 * (nnz * (item + index) + (n_angles * det_count + vol.shape[0] * vol.shape[1]) * index)


def transpose_torch(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape):
    """``(ccol, row, val)`` of the transpose of a CSR matrix, rows ascending in each column,
    by a stable sort (fast on a GPU)."""
    _, order = torch.sort(col, stable=True)
    row = torch.repeat_interleave(torch.arange(shape[0], device=col.device), crow.diff())
    ccol = torch.zeros(shape[1] + 1, dtype=torch.int64, device=col.device)
    torch.cumsum(torch.bincount(col, minlength=shape[1]), dim=0, out=ccol[1:])
    return ccol, row[order], val[order]


def transpose_scipy(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape):
    """``transpose_torch`` on the CPU by scipy's one-pass counting sort (a few times faster)."""
    csc = scipy.sparse.csr_matrix((val.numpy(), col.numpy(), crow.numpy()), shape=shape).tocsc()
    return tuple(torch.from_numpy(a) for a in (csc.indptr, csc.indices, csc.data))


class SparseMatrix:
    """The CSR matrix ``A`` ``(rays, pixels)`` on one device and dtype, and its transpose,
    made on first use (a first ``A(x)`` does not wait for it)."""

    def __init__(self, crow, col, val, shape: tuple[int, int], device, dtype):
        crow, col = torch.as_tensor(crow, device=device), torch.as_tensor(col, device=device)
        val = torch.as_tensor(val, device=device).to(dtype)
        self.shape = shape
        self._index_dtype = torch.int32 if max(len(val), *shape) < 2**31 else torch.int64
        self.forward = self._csr(crow, col, val, shape)
        self.nnz = len(val)

    def _csr(self, crow, col, val, shape) -> torch.Tensor:
        with warnings.catch_warnings(), torch.sparse.check_sparse_tensor_invariants(False):
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(
                crow.to(self._index_dtype), col.to(self._index_dtype), val, size=shape
            )

    @functools.cached_property
    def transpose(self) -> torch.Tensor:
        """``Aᵀ`` as CSR (rows ascending in each of its rows)."""
        f = self.forward
        crow, col, val = f.crow_indices().to(torch.int64), f.col_indices(), f.values()
        transpose = transpose_scipy if crow.device.type == "cpu" else transpose_torch
        ccol, row, val_t = transpose(crow, col, val, self.shape)
        return self._csr(ccol, row, val_t, self.shape[::-1])

    @property
    def nbytes(self) -> int:
        made = [self.forward] + ([self.transpose] if "transpose" in self.__dict__ else [])
        return sum(
            m.values().nbytes + m.col_indices().nbytes + m.crow_indices().nbytes for m in made
        )


def normalise_device(device) -> torch.device:
    """``cuda`` → ``cuda:<current>``, so that one GPU has one cache key."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _disk_path(vol: VolumeGeometry, pg: ProjectionGeometry) -> Path | None:
    """``$OPERATORS_SPARSE_CACHE_DIR/<sha256 of the geometry pair>.pt``, if the variable is set."""
    folder = os.environ.get("OPERATORS_SPARSE_CACHE_DIR")
    if not folder:
        return None
    digest = hashlib.sha256(repr((vol, pg, _FORMAT)).encode()).hexdigest()[:32]
    return Path(folder) / f"joseph-{digest}.pt"


def _csr_arrays(vol: VolumeGeometry, pg: ProjectionGeometry, device: torch.device):
    """``build_matrix`` on ``device``, read from / written to the disk cache when enabled."""
    path = _disk_path(vol, pg)
    if path is not None and path.is_file():
        saved = torch.load(path, map_location=device, weights_only=True)
        return saved["crow"], saved["col"], saved["val"]
    crow, col, val = build_matrix(vol, pg, device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"crow": crow.cpu(), "col": col.cpu(), "val": val.cpu()}, partial)
        partial.replace(path)
    return crow, col, val


class _MatrixCache:
    """Process-wide LRU cache of built matrices, bounded by a byte budget."""

    def __init__(self):
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, vol, pg, device, dtype, budget: int) -> SparseMatrix:
        device = normalise_device(device)
        key = (vol, pg, device, dtype)
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
        crow, col, val = _csr_arrays(vol, pg, device)
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
        return out.T.contiguous().reshape(batch, *out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W) → (B, n_angles, det_count)``."""
        return self._apply(self.matrix(x.device, x.dtype).forward, x, self.range_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, n_angles, det_count) → (B, H, W)``."""
        return self._apply(self.matrix(y.device, y.dtype).transpose, y, self.domain_shape)
