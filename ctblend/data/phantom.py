"""A seeded procedural 3-D CT phantom with CT-like anatomy, in protocol units [0, 1].

The phantom is built in millimetres and Hounsfield units, then mapped with ``(HU + 1024) / 4095``:
air 0, fat ≈ 0.23, water 0.25, soft tissue ≈ 0.26, contrast vessels ≈ 0.29, bone ≈ 0.49-0.57.
Axes follow :mod:`ctblend.io`: z inferior → superior, rows anterior → posterior, columns patient
right → left. The in-plane field of view is 400 mm over the larger of H, W; slices are 2.5 mm apart
and centred near the diaphragm dome, so a few slices show lung bases, heart, liver dome, spine and
ribs, and a tall volume runs from the kidneys to the lung apices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctblend.data.scaling import HU_MIN, hu_to_unit
from ctblend.io import DataError

__all__ = ["FOV_MM", "SLICE_MM", "ct_phantom", "phantom_spacing_mm"]

FOV_MM = 400.0
SLICE_MM = 2.5
Z_CENTER_MM = 30.0  # body height of the middle slice (diaphragm dome near 0-20 mm)

HU = {
    "fat": -100.0,
    "muscle": 45.0,
    "mediastinum": 20.0,
    "visceral_fat": -85.0,
    "lung": -860.0,
    "heart": 40.0,
    "blood_pool": 140.0,
    "liver": 60.0,
    "stomach": 30.0,
    "gas": -950.0,
    "spleen": 50.0,
    "kidney": 35.0,
    "aorta": 180.0,
    "ivc": 90.0,
    "cortical_bone": 1300.0,
    "cancellous_bone": 250.0,
    "disc": 80.0,
    "canal": 15.0,
    "rib": 1000.0,
    "cartilage": 120.0,
    "vessel": 40.0,
    "nodule": 25.0,
}


def phantom_spacing_mm(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """Voxel spacing ``(dz, dy, dx)`` in mm of :func:`ct_phantom` for ``shape``."""
    pixel = FOV_MM / max(shape[1], shape[2])
    return (SLICE_MM, pixel, pixel)


@dataclass(frozen=True)
class _Segment:
    """A vessel segment (capsule) from ``start`` to ``end`` (x, y, z mm) with radius ``radius``."""

    start: np.ndarray
    end: np.ndarray
    radius: float


@dataclass(frozen=True)
class _Anatomy:
    """Seeded anatomical parameters (mm)."""

    body_scale: tuple[float, float]
    fat_mm: float
    shift: tuple[float, float]
    heart_scale: float
    rib_phase: float
    vessels: tuple[_Segment, ...]
    nodules: tuple[tuple[float, float, float, float], ...]


def _q(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """Squared normalised elliptic radius: < 1 inside the ellipse."""
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2


def _body_axes(z: float, anatomy: _Anatomy) -> tuple[float, float]:
    sx, sy = anatomy.body_scale
    t = np.tanh(z / 60.0)
    return (160.0 + 8.0 * t) * sx, (112.0 - 4.0 * t) * sy


def _dome(x: np.ndarray, y: np.ndarray, cx: float, top: float) -> np.ndarray:
    """Height (mm) of the diaphragm under a lung centred at ``cx``."""
    return top - 0.012 * ((x - cx) ** 2 + y**2)


def _lung_masks(x: np.ndarray, y: np.ndarray, z: float, anatomy: _Anatomy):
    """Right and left lung masks at height ``z`` (boolean ``(H, W)`` each)."""
    dx, dy = anatomy.shift
    shrink = np.sqrt(max(0.0, 1.0 - ((z - 170.0) / 90.0) ** 2)) if z > 170.0 else 1.0
    if shrink <= 0.05:
        empty = np.zeros(x.shape, dtype=bool)
        return empty, empty
    right = _q(x, y, -72.0 + dx, 8.0 + dy, 58.0 * shrink, 82.0 * shrink) < 1
    left = _q(x, y, 75.0 + dx, 8.0 + dy, 54.0 * shrink, 80.0 * shrink) < 1
    right &= z > _dome(x, y, -72.0 + dx, 22.0)
    left &= z > _dome(x, y, 75.0 + dx, 10.0)
    return right, left


def _make_anatomy(rng: np.random.Generator, z_range: tuple[float, float]) -> _Anatomy:
    shift = (float(rng.uniform(-5, 5)), float(rng.uniform(-5, 5)))
    anatomy = _Anatomy(
        body_scale=(float(rng.uniform(0.92, 1.06)), float(rng.uniform(0.92, 1.06))),
        fat_mm=float(rng.uniform(8.0, 20.0)),
        shift=shift,
        heart_scale=float(rng.uniform(0.92, 1.08)),
        rib_phase=float(rng.uniform(-8.0, 8.0)),
        vessels=(),
        nodules=(),
    )
    vessels = []
    for side, height, tilt in (
        (-1.0, 55.0, -0.5),
        (1.0, 55.0, -0.5),
        (-1.0, 95.0, 0.6),
        (1.0, 95.0, 0.6),
    ):
        hilum = np.array([side * 38.0 + shift[0], 5.0 + shift[1], height])
        stack = [(hilum, np.array([side, 0.0, tilt]), 4.0, 40.0, 0)]
        while stack:
            start, heading, radius, length, level = stack.pop()
            for _ in range(4 if level == 0 else 2):
                direction = heading + rng.normal(0.0, 0.6, size=3)
                direction /= np.linalg.norm(direction)
                end = start + length * direction
                vessels.append(_Segment(start, end, radius))
                if level < 3:
                    stack.append((end, direction, radius * 0.7, length * 0.75, level + 1))
    nodules = []
    z_lo, z_hi = z_range
    count = int(rng.integers(3, 7))
    for _ in range(200):
        if len(nodules) == count:
            break
        x, y = rng.uniform(-130, 130), rng.uniform(-75, 85)
        z, r = rng.uniform(z_lo, z_hi), rng.uniform(3.0, 7.0)
        right, left = _lung_masks(np.array([x]), np.array([y]), z, anatomy)
        inner_r, inner_l = _lung_masks(np.array([x]), np.array([y]), z - r, anatomy)
        if (right[0] and inner_r[0]) or (left[0] and inner_l[0]):
            nodules.append((float(x), float(y), float(z), float(r)))
    return _Anatomy(
        body_scale=anatomy.body_scale,
        fat_mm=anatomy.fat_mm,
        shift=shift,
        heart_scale=anatomy.heart_scale,
        rib_phase=anatomy.rib_phase,
        vessels=tuple(vessels),
        nodules=tuple(nodules),
    )


def _ellipsoid_slice(z: float, zc: float, half: float) -> float:
    """Cross-section scale of an ellipsoid of half-height ``half`` at ``z`` (0 outside)."""
    u = (z - zc) / half
    return float(np.sqrt(1.0 - u * u)) if abs(u) < 1 else 0.0


def _paint_slice(x: np.ndarray, y: np.ndarray, z: float, a: _Anatomy) -> np.ndarray:
    """HU of one axial slice at height ``z`` (mm); ``x``, ``y`` are ``(H, W)`` coordinates."""
    hu = np.full(x.shape, float(HU_MIN), dtype=np.float64)
    dx, dy = a.shift
    ax, ay = _body_axes(z, a)

    def superellipse(shrink: float) -> np.ndarray:
        return (np.abs(x / (ax - shrink)) ** 2.3 + np.abs((y - 5.0) / (ay - shrink)) ** 2.3) < 1

    hu[superellipse(0.0)] = HU["fat"]
    hu[superellipse(a.fat_mm)] = HU["muscle"]
    cavity = superellipse(a.fat_mm + 14.0)
    thorax = z > 0.0
    hu[cavity] = HU["mediastinum"] if thorax else HU["visceral_fat"]
    paraspinal = (_q(x, y, -32.0, 100.0, 22.0, 20.0) < 1) | (_q(x, y, 32.0, 100.0, 22.0, 20.0) < 1)
    hu[paraspinal] = HU["muscle"]

    # Abdominal organs below the diaphragm.
    s = _ellipsoid_slice(z, -60.0, 110.0)
    if s > 0:
        liver = _q(x, y, -55.0 + dx, 5.0 + dy, 95.0 * s, 85.0 * s) < 1
        hu[liver & (z < _dome(x, y, -72.0 + dx, 22.0) - 4.0)] = HU["liver"]
    s = _ellipsoid_slice(z, -40.0, 55.0)
    if s > 0:
        stomach = (_q(x, y, 60.0 + dx, -25.0 + dy, 48.0 * s, 40.0 * s) < 1) & (
            z < _dome(x, y, 75.0 + dx, 10.0) - 4.0
        )
        hu[stomach] = HU["stomach"]
        hu[stomach & (_q(x, y, 60.0 + dx, -45.0 + dy, 30.0 * s, 16.0 * s) < 1)] = HU["gas"]
    s = _ellipsoid_slice(z, -60.0, 45.0)
    if s > 0:
        spleen = _q(x, y, 95.0 + dx, 45.0 + dy, 28.0 * s, 42.0 * s) < 1
        hu[spleen & (z < _dome(x, y, 75.0 + dx, 10.0) - 4.0)] = HU["spleen"]
    s = _ellipsoid_slice(z, -160.0, 55.0)
    if s > 0:
        for side in (-1.0, 1.0):
            hu[_q(x, y, side * 70.0 + dx, 55.0 + dy, 30.0 * s, 38.0 * s) < 1] = HU["kidney"]

    # Thorax: lungs, heart.
    right, left = _lung_masks(x, y, z, a)
    lungs = right | left
    hu[lungs] = HU["lung"]
    s = _ellipsoid_slice(z, 45.0, 60.0 * a.heart_scale)
    if s > 0:
        hs = a.heart_scale * s
        heart = _q(x, y, 22.0 + dx, -28.0 + dy, 62.0 * hs, 50.0 * hs) < 1
        hu[heart] = HU["heart"]
        hu[heart & (_q(x, y, 35.0 + dx, -25.0 + dy, 26.0 * hs, 20.0 * hs) < 1)] = HU["blood_pool"]

    # Great vessels.
    hu[_q(x, y, 15.0, 48.0, 12.0, 12.0) < 1] = HU["aorta"]
    if z < 20.0:
        hu[_q(x, y, -25.0, 38.0, 11.0, 11.0) < 1] = HU["ivc"]

    # Pulmonary vessels (inside the lungs only) and nodules.
    for seg in a.vessels:
        lo = np.minimum(seg.start, seg.end) - seg.radius
        hi = np.maximum(seg.start, seg.end) + seg.radius
        if not lo[2] <= z <= hi[2]:
            continue
        window = (
            slice(*np.searchsorted(y[:, 0], [lo[1], hi[1]])),
            slice(*np.searchsorted(x[0], [lo[0], hi[0]])),
        )
        xs, ys = x[window], y[window]
        d = seg.end - seg.start
        t = (xs - seg.start[0]) * d[0] + (ys - seg.start[1]) * d[1] + (z - seg.start[2]) * d[2]
        t = np.clip(t / (d @ d), 0.0, 1.0)
        dist2 = (xs - seg.start[0] - t * d[0]) ** 2 + (ys - seg.start[1] - t * d[1]) ** 2
        dist2 += (z - seg.start[2] - t * d[2]) ** 2
        hu[window][lungs[window] & (dist2 < seg.radius**2)] = HU["vessel"]
    for nx, ny, nz, r in a.nodules:
        rz2 = r * r - (z - nz) ** 2
        if rz2 > 0:
            hu[(x - nx) ** 2 + (y - ny) ** 2 < rz2] = HU["nodule"]

    # Spine: vertebral bodies separated by discs every 30 mm, canal, arch, spinous process.
    disc = abs(((z + a.rib_phase) % 30.0) - 15.0) > 12.0
    body = _q(x, y, 0.0, 75.0, 18.0, 16.0)
    if disc:
        hu[body < 1] = HU["disc"]
    else:
        hu[body < 1] = HU["cortical_bone"]
        hu[body < (1 - 3.0 / 17.0) ** 2] = HU["cancellous_bone"]
        arch = _q(x, y, 0.0, 101.0, 13.0, 12.0) < 1
        hu[arch] = HU["cortical_bone"]
        hu[_q(x, y, 0.0, 120.0, 5.0, 13.0) < 1] = HU["cortical_bone"]
    hu[_q(x, y, 0.0, 101.0, 7.5, 7.0) < 1] = HU["canal"]

    # Ribs (slanted rings, lower anteriorly) and sternum in the thorax.
    if z > -70.0:
        ra, rb = ax - a.fat_mm - 8.0, ay - a.fat_mm - 8.0
        q = np.sqrt(_q(x, y, 0.0, 5.0, ra, rb))
        ring = np.abs(q - 1.0) * min(ra, rb) < 5.0
        height = z - 0.6 * (y - 75.0) - a.rib_phase
        rib = ring & (np.abs(((height + 14.0) % 28.0) - 14.0) < 4.5) & (height > -60.0)
        rib &= height < 260.0
        rib &= np.abs(x) > 22.0
        hu[rib & (y > -60.0)] = HU["rib"]
        hu[rib & (y <= -60.0)] = HU["cartilage"]
    if -30.0 < z < 200.0:
        sternum_y = -(ay - a.fat_mm - 12.0) + 5.0
        sternum = _q(x, y, 0.0, sternum_y, 16.0, 7.0)
        hu[sternum < 1] = HU["cortical_bone"]
        hu[sternum < 0.45] = HU["cancellous_bone"]
    return hu


def ct_phantom(shape: tuple[int, int, int] = (64, 128, 128), seed: int = 0) -> np.ndarray:
    """A seeded CT-like phantom ``(Z, H, W)`` float32 in [0, 1] (protocol units).

    Body outline with fat and muscle, lungs with vessels and small nodules, heart, liver, stomach,
    spleen, kidneys, aorta, spine, ribs and sternum, plus mild smooth texture. Spacing:
    :func:`phantom_spacing_mm`.
    """
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"phantom shape {tuple(shape)}; expected three positive sizes (Z, H, W)")
    z_n, h, w = (int(s) for s in shape)
    pixel = FOV_MM / max(h, w)
    rows = (np.arange(h) - (h - 1) / 2.0) * pixel
    cols = (np.arange(w) - (w - 1) / 2.0) * pixel
    y, x = np.meshgrid(rows, cols, indexing="ij")
    heights = (np.arange(z_n) - (z_n - 1) / 2.0) * SLICE_MM + Z_CENTER_MM
    rng = np.random.default_rng(seed)
    anatomy = _make_anatomy(rng, (float(heights[0]), float(heights[-1])))

    hu = np.empty((z_n, h, w), dtype=np.float32)
    for k, z in enumerate(heights):
        hu[k] = _paint_slice(x, y, float(z), anatomy)

    noise = rng.standard_normal((z_n, h, w), dtype=np.float32)
    sigma = (0.6, 2.0 / pixel, 2.0 / pixel)
    noise = ndimage.gaussian_filter(noise, sigma=sigma, mode="reflect")
    noise /= max(float(noise.std()), 1e-6)
    inside = hu > HU_MIN
    amplitude = np.where(hu < -500.0, 35.0, 12.0).astype(np.float32)
    hu += np.where(inside, amplitude * noise, 0.0).astype(np.float32)
    return hu_to_unit(hu)
