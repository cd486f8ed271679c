"""Analytic reconstruction: FBP for parallel and fan (flat/arc, Parker short scan), FDK for cone.

The ramp filter is discretised in the spatial domain (Kak & Slaney, eq. 3.61: ``h[0] = 1/4τ²``,
``h[n odd] = −1/(nπτ)²``), applied by FFT with the detector axis zero-padded to a power of two
of at least twice its length, optionally apodised by a window. Backprojection is pixel-driven
(linear interpolation on the detector), so the result is in the volume's own units: a uniform
object of value 1 reconstructs to 1.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .geometry import (
    ConeGeometry,
    FanGeometry,
    FanVecGeometry,
    ParallelGeometry,
    ParallelVecGeometry,
    VolumeGeometry,
)
from .operator import Operator

FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
_GATHER_ELEMENTS = 2**24


def _padded_size(n_det: int) -> int:
    return max(64, 2 ** int(math.ceil(math.log2(2 * n_det))))


def ramp_filter(
    n_det: int,
    spacing: float,
    window: str = "ram-lak",
    equiangular: bool = False,
    dtype=torch.float64,
) -> torch.Tensor:
    """Frequency response ``(P,)`` of the spatial ramp kernel, ``P`` = padded detector length.

    ``spacing`` is the bin width (mm, or radians when ``equiangular``: the kernel is then
    ``h(nΔγ) (nΔγ / sin nΔγ)²``, Kak & Slaney eq. 3.113). The response includes the ``τ`` of
    the convolution sum, so ``ifft(fft(p, P) · H)[:n_det]`` is the filtered projection.
    """
    if window not in FILTERS:
        raise ValueError(f"filter: expected one of {FILTERS}, got {window!r}")
    size = _padded_size(n_det)
    n = np.concatenate([np.arange(0, size // 2 + 1), np.arange(-(size // 2) + 1, 0)])
    h = np.zeros(size)
    h[0] = 0.25 / spacing**2
    odd = n % 2 == 1
    h[odd] = -1.0 / (np.pi * n[odd] * spacing) ** 2
    if equiangular:
        gamma = n[1:] * spacing
        h[1:] *= (gamma / np.sin(gamma)) ** 2
    f = np.fft.fftfreq(size)  # cycles per sample, in [-0.5, 0.5)
    windows = {
        "ram-lak": np.ones_like(f),
        "shepp-logan": np.sinc(f),
        "cosine": np.cos(np.pi * f),
        "hamming": 0.54 + 0.46 * np.cos(2 * np.pi * f),
        "hann": 0.5 + 0.5 * np.cos(2 * np.pi * f),
    }
    return torch.as_tensor(np.real(np.fft.fft(h)) * spacing * windows[window], dtype=dtype)


def filter_projections(
    p: torch.Tensor, spacing: float, window: str = "ram-lak", equiangular: bool = False
) -> torch.Tensor:
    """Ramp-filter the last axis of ``p`` ``(..., n_det)``; ``spacing`` = bin width."""
    n_det = p.shape[-1]
    response = ramp_filter(n_det, spacing, window, equiangular, dtype=p.dtype).to(p.device)
    spectrum = torch.fft.fft(p, n=response.shape[0], dim=-1) * response
    return torch.fft.ifft(spectrum, dim=-1).real[..., :n_det]


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _pixel_centres(vol: VolumeGeometry) -> np.ndarray:
    """``(H·W, 2)`` pixel centres (x, y) in ASTRA's 2D convention (row 0 at the top)."""
    (ymin, ymax), (xmin, xmax) = vol.extent
    (H, W), (dy, dx) = vol.shape, vol.spacing
    y = ymax - (np.arange(H) + 0.5) * dy
    x = xmin + (np.arange(W) + 0.5) * dx
    yy, xx = np.meshgrid(y, x, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def _backproject(q: torch.Tensor, bins: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Σ_v weight[v, p] · q[:, v](bins[v, p])`` with linear interpolation, zero outside.

    q ``(B, V, D)``, bins/weight ``(V, P)`` → ``(B, P)``.
    """
    batch, n_views, n_det = q.shape
    padded = torch.nn.functional.pad(q, (1, 1))
    out = torch.zeros(batch, bins.shape[1], dtype=q.dtype, device=q.device)
    chunk = max(1, _GATHER_ELEMENTS // max(1, batch * bins.shape[1]))
    for start in range(0, n_views, chunk):
        b = bins[start : start + chunk]
        lower = torch.floor(b)
        frac = b - lower
        lo_idx = (lower.clamp(-1, n_det) + 1).long()
        hi_idx = ((lower + 1).clamp(-1, n_det) + 1).long()
        qs = padded[:, start : start + chunk]
        shape = (batch, *b.shape)
        lo_val = torch.gather(qs, 2, lo_idx.expand(shape))
        hi_val = torch.gather(qs, 2, hi_idx.expand(shape))
        out += (((1 - frac) * lo_val + frac * hi_val) * weight[start : start + chunk]).sum(dim=1)
    return out


_WEDGE = 10.0  # a gap wider than this many typical gaps is missing angles, not a sparse view


def view_weights(angles: np.ndarray, period: float) -> np.ndarray:
    """Per-view ``Δθ`` ``(V,)``: half the gap to each sorted neighbour, cyclic over ``period``.

    Views at the same angle modulo ``period`` share their weight (a full parallel turn counts
    every line once). A gap wider than ``_WEDGE`` times the median gap is a wedge of missing
    angles (limited angle): the views beside it get the median gap on that side.
    """
    a = np.mod(np.asarray(angles, dtype=np.float64), period)
    order = np.argsort(a, kind="stable")
    ordered = a[order]
    gaps = np.diff(np.concatenate([ordered, ordered[:1] + period]))  # after each sorted view
    positive = gaps[gaps > 1e-9 * period]
    typical = float(np.median(positive)) if positive.size else period
    gaps = np.where(gaps > _WEDGE * typical, typical, gaps)
    weights = np.empty_like(a)
    weights[order] = 0.5 * (gaps + np.roll(gaps, 1))
    return weights


def _scan_weights(
    beta: np.ndarray, gamma: np.ndarray, half_fan: float, short_scan: bool | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(Δβ (V,), redundancy weights (V, D))`` of a circular fan or cone scan.

    A full turn sees every line twice (weights 1/2); a shorter scan gets Parker weights
    (automatic when ``short_scan`` is None).
    """
    dbeta = view_weights(beta, 2 * math.pi)
    if short_scan is None:
        short_scan = float(dbeta.sum()) < 2 * math.pi - 0.5 * float(dbeta.min())
    if short_scan:
        return dbeta, parker_weights(beta, gamma, half_fan)
    return dbeta, np.full((len(beta), len(gamma)), 0.5)


def parker_weights(beta: np.ndarray, gamma: np.ndarray, half_fan: float) -> np.ndarray:
    """Parker (1982) short-scan weights ``(V, D)`` for source angles ``beta`` (from 0) and ray
    angles ``gamma``; redundant rays ``(β, γ)`` and ``(β + π − 2γ, −γ)`` sum to one."""
    b = beta[:, None] - beta.min()
    g = gamma[None, :]
    w = np.ones(np.broadcast_shapes(b.shape, g.shape))
    rise = b < 2 * (half_fan + g)
    fall = b > math.pi + 2 * g
    with np.errstate(divide="ignore", invalid="ignore"):
        w_rise = np.sin(np.pi / 4 * b / (half_fan + g)) ** 2
        w_fall = np.sin(np.pi / 4 * (math.pi + 2 * half_fan - b) / (half_fan - g)) ** 2
    w = np.where(rise, w_rise, w)
    w = np.where(fall, w_fall, w)
    w = np.where(b > math.pi + 2 * half_fan, 0.0, w)
    return np.nan_to_num(w)


@dataclass(frozen=True)
class _Plan:
    """Geometry tables of one FBP/FDK set-up, cached per (geometry, device, dtype)."""

    ray_weight: torch.Tensor | None  # multiplies the projections before filtering
    spacing: float  # filter bin width (mm, or radians when equiangular)
    equiangular: bool
    bins: torch.Tensor  # FBP: detector bin of each pixel per view (V, P); FDK: column (V, H, W)
    weight: torch.Tensor  # backprojection weight, broadcastable to ``bins``
    magnification: torch.Tensor | None = None  # FDK: source–detector over source–voxel (V, H, W)

    @property
    def nbytes(self) -> int:
        tables = (self.ray_weight, self.bins, self.weight, self.magnification)
        return sum(t.nbytes for t in tables if t is not None)


def _parallel_tables(vol: VolumeGeometry, pg) -> tuple:
    vec = np.asarray(pg.to_vec().vectors)
    rays, d, u = vec[:, 0:2], vec[:, 2:4], vec[:, 4:6]
    dtheta = view_weights(np.arctan2(rays[:, 0], -rays[:, 1]), math.pi)  # θ, θ + π: one line
    pix = _pixel_centres(vol)
    s = _cross(pix[None] - d[:, None], rays[:, None]) / _cross(u, rays)[:, None]
    bins = s + (pg.shape[1] - 1) / 2
    return (
        None,
        float(np.linalg.norm(u[0])),
        False,
        bins,
        np.broadcast_to(dtheta[:, None], s.shape).copy(),
    )


def _fan_tables(vol: VolumeGeometry, pg: FanGeometry, short_scan: bool | None) -> tuple:
    beta = np.asarray(pg.angles)
    D, n_det = pg.src_det, pg.det_count
    idx = np.arange(n_det) - (n_det - 1) / 2
    if pg.curved:
        dgamma = pg.det_spacing / D
        gamma = idx * dgamma
        half_fan = (n_det / 2) * dgamma
    else:
        xi = idx * pg.det_spacing
        gamma = np.arctan(xi / D)
        half_fan = math.atan(n_det / 2 * pg.det_spacing / D)
    # Parker weights sum to one over the two copies of a line; a full turn weights each by 1/2
    dbeta, weights = _scan_weights(beta, gamma, half_fan, short_scan)
    src = np.stack([np.sin(beta), -np.cos(beta)], axis=1) * pg.src_orig
    central = -src / pg.src_orig
    across = np.stack([np.cos(beta), np.sin(beta)], axis=1)
    pix = _pixel_centres(vol)
    rel = pix[None] - src[:, None]  # (V, P, 2)
    along = np.einsum("vpk,vk->vp", rel, central)
    side = np.einsum("vpk,vk->vp", rel, across)
    if pg.curved:
        pre = pg.src_orig * np.cos(gamma)
        bins = np.arctan2(side, along) / dgamma + (n_det - 1) / 2
        bp_weight = dbeta[:, None] / (along**2 + side**2)
        spacing = dgamma
    else:
        pre = D / np.sqrt(D**2 + (idx * pg.det_spacing) ** 2)
        bins = (side / along) * D / pg.det_spacing + (n_det - 1) / 2
        bp_weight = dbeta[:, None] * (pg.src_orig / along) ** 2
        spacing = pg.det_spacing * pg.src_orig / D  # bins on a virtual detector through the origin
    return pre * weights, spacing, pg.curved, bins, bp_weight


def _cone_tables(vol: VolumeGeometry, pg: ConeGeometry, short_scan: bool | None) -> tuple:
    rows, cols = pg.det_shape
    dv, du = pg.det_spacing
    D, R = pg.src_orig + pg.orig_det, pg.src_orig
    beta = np.asarray(pg.angles)
    u = (np.arange(cols) - (cols - 1) / 2) * du
    v = (np.arange(rows) - (rows - 1) / 2) * dv
    half_fan = math.atan(cols / 2 * du / D)
    dbeta, redundancy = _scan_weights(beta, np.arctan(u / D), half_fan, short_scan)  # (V, cols)
    pre = D / np.sqrt(D**2 + u[None, :] ** 2 + v[:, None] ** 2)  # (rows, cols)
    _, (ymin, _), (xmin, _) = vol.extent
    _, H, W = vol.shape
    _, dy, dx = vol.spacing
    yy, xx = np.meshgrid(
        ymin + (np.arange(H) + 0.5) * dy, xmin + (np.arange(W) + 0.5) * dx, indexing="ij"
    )
    src = np.stack([np.sin(beta), -np.cos(beta)], axis=1) * R  # (V, 2)
    rel_x, rel_y = xx[None] - src[:, 0, None, None], yy[None] - src[:, 1, None, None]
    sin, cos = np.sin(beta)[:, None, None], np.cos(beta)[:, None, None]
    along = rel_y * cos - rel_x * sin  # towards the rotation axis
    side = rel_x * cos + rel_y * sin
    mag = D / along  # (V, H, W)
    col = (2 * (side * mag / du + (cols - 1) / 2) + 1) / cols - 1  # grid_sample's x in [-1, 1]
    weight = dbeta[:, None, None] * (R / along) ** 2
    return pre[:, None, :] * redundancy[None], du * R / D, False, col, weight, mag


_PLAN_CACHE_BYTES = 512 * 2**20  # plans kept for later calls, least recently used dropped
_plans: OrderedDict = OrderedDict()


def _plan(vol: VolumeGeometry, pg, short_scan: bool | None, device, dtype) -> _Plan:
    """The cached plan of this set-up (plans over the cache's bytes are rebuilt per call)."""
    key = (vol, pg, short_scan, device, dtype)
    if key in _plans:
        _plans.move_to_end(key)
        return _plans[key]
    plan = _build_plan(vol, pg, short_scan, device, dtype)
    if plan.nbytes <= _PLAN_CACHE_BYTES:
        _plans[key] = plan
        while sum(p.nbytes for p in _plans.values()) > _PLAN_CACHE_BYTES:
            _plans.popitem(last=False)
    return plan


def _build_plan(vol: VolumeGeometry, pg, short_scan: bool | None, device, dtype) -> _Plan:
    if isinstance(pg, ParallelGeometry | ParallelVecGeometry):
        tables = _parallel_tables(vol, pg)
    elif isinstance(pg, FanGeometry):
        tables = _fan_tables(vol, pg, short_scan)
    else:
        tables = _cone_tables(vol, pg, short_scan)

    def as_tensor(a):
        return None if a is None else torch.as_tensor(a, dtype=dtype, device=device)

    ray_weight, spacing, equiangular, bins, weight, *mag = tables
    return _Plan(
        as_tensor(ray_weight),
        spacing,
        equiangular,
        as_tensor(bins),
        as_tensor(weight),
        as_tensor(mag[0]) if mag else None,
    )


def fbp(
    A: Operator, y: torch.Tensor, filter: str = "ram-lak", short_scan: bool | None = None
) -> torch.Tensor:  # noqa: A002
    """Filtered backprojection of ``y`` ``(..., *A.range_shape)`` → ``(..., *A.domain_shape)``.

    Parallel beams (any angle set, vector form included) and fan beams with flat or arc
    detectors; ``short_scan`` (default: automatic) applies Parker weights to fan scans shorter
    than a full turn. Use ``fdk`` for cone beams.
    """
    pg = A.proj_geom
    if pg.ndim == 3:
        raise ValueError("fbp handles 2D geometries; use fdk for cone beam")
    if isinstance(pg, FanVecGeometry):
        raise ValueError(
            "fbp of a fan_vec geometry is not supported; build it with fan_flat/fan_arc"
        )
    if not isinstance(pg, ParallelGeometry | ParallelVecGeometry | FanGeometry):
        raise ValueError(f"fbp does not support {type(pg).__name__}")
    y, out_dtype = A.prepare(y, "range")
    plan = _plan(A.slice_geom, pg, short_scan, y.device, y.dtype)
    flat = y.reshape(-1, *pg.shape)
    if plan.ray_weight is not None:
        flat = flat * plan.ray_weight
    q = filter_projections(flat, plan.spacing, filter, equiangular=plan.equiangular)
    out = _backproject(q, plan.bins, plan.weight)
    return out.reshape(*y.shape[: y.ndim - len(A.range_shape)], *A.domain_shape).to(out_dtype)


def fdk(
    A: Operator, y: torch.Tensor, filter: str = "ram-lak", short_scan: bool | None = None
) -> torch.Tensor:  # noqa: A002
    """FDK for a circular ``cone`` geometry: ``(..., rows, V, cols) → (..., Z, H, W)``.

    ``short_scan`` (default: automatic) applies the fan-beam Parker weights, per detector
    column, to scans shorter than a full turn (at least π plus the fan angle).
    """
    pg, vol = A.proj_geom, A.vol_geom
    if not isinstance(pg, ConeGeometry):
        raise ValueError(
            f"fdk needs a circular cone geometry (operators.cone), got {type(pg).__name__}"
        )
    y, out_dtype = A.prepare(y, "range")
    plan = _plan(vol, pg, short_scan, y.device, y.dtype)
    batch_shape = y.shape[: y.ndim - 3]
    proj = y.reshape(-1, *A.range_shape) * plan.ray_weight
    q = filter_projections(proj, plan.spacing, filter)  # (B, rows, V, cols)
    q = q.permute(2, 0, 1, 3).contiguous()  # (V, B, rows, cols): one contiguous image per view
    Z, H, W = vol.shape
    rows = pg.det_shape[0]
    dv = pg.det_spacing[0]
    zmin = vol.extent[0][0]
    z = zmin + (torch.arange(Z, dtype=q.dtype, device=q.device) + 0.5) * vol.spacing[0]
    out = torch.zeros((q.shape[1], Z, H, W), dtype=q.dtype, device=q.device)
    for k in range(q.shape[0]):
        row = z[:, None, None] * plan.magnification[k] / dv + (rows - 1) / 2  # (Z, H, W)
        grid = torch.stack(
            [plan.bins[k].expand(Z, H, W), (2 * row + 1) / rows - 1], dim=-1
        )  # (Z, H, W, 2) normalised (x=col, y=row)
        sampled = torch.nn.functional.grid_sample(
            q[k].unsqueeze(0),
            grid.reshape(1, Z, H * W, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # (1, B, Z, H*W)
        out += sampled[0].reshape(-1, Z, H, W) * plan.weight[k]
    return out.reshape(*batch_shape, Z, H, W).to(out_dtype)
