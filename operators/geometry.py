"""Immutable geometry values in physical units, with ASTRA's vector convention.

Axis conventions (identical to ASTRA's, so geometries convert both ways):

* 2D volume ``(H, W)`` = (rows, columns). Column ``c`` lies at ``x = min_x + (c + 1/2) dx``
  and row ``r`` at ``y = max_y - (r + 1/2) dy`` (row 0 at the top, ``y`` pointing up).
* 3D volume ``(Z, H, W)`` = (slices, rows, columns) with ``x`` along columns, ``y`` along rows
  and ``z`` along slices, each increasing with the index (ASTRA 3D convention).
* 2D projection data ``(n_angles, det_count)``; 3D projection data
  ``(det_rows, n_angles, det_cols)`` as in ASTRA.
* Vector forms: 2D parallel rows ``(ray_x, ray_y, d_x, d_y, u_x, u_y)``, 2D fan rows
  ``(src_x, src_y, d_x, d_y, u_x, u_y)``; 3D rows add ``z`` to each vector and a second detector
  vector ``v`` (12 numbers). ``d`` is the detector centre, ``u`` (``v``) the vector from one
  detector pixel to the next along columns (rows).

A 2D geometry applied to a ``(Z, H, W)`` tensor projects every axial slice independently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np

Angles = int | float | Sequence[float] | np.ndarray


def _angles(angles: Angles, arc: float = math.pi) -> tuple[float, ...]:
    """An integer means that many angles over ``arc``, endpoint excluded (tomosipo's rule)."""
    if isinstance(angles, int | np.integer):
        if angles <= 0:
            raise ValueError(f"angles: expected a positive number of angles, got {angles}")
        values = np.linspace(0.0, arc, int(angles), endpoint=False)
    else:
        values = np.asarray(angles, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("angles: the angle list is empty; expected at least one angle")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"angles: expected finite values, got {values[~np.isfinite(values)][:3]}")
    return tuple(float(a) for a in values)


def _positive_int(name: str, value: int) -> int:
    if int(value) != value or int(value) <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


def _tuple(name: str, value, n: int, cast=float) -> tuple:
    if isinstance(value, int | float | np.integer | np.floating):
        value = (value,) * n
    value = tuple(cast(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name}: expected {n} values, got {len(value)}: {value}")
    return value


@dataclass(frozen=True)
class VolumeGeometry:
    """A voxel grid: ``shape`` ``(H, W)`` or ``(Z, H, W)``, ``spacing`` and ``center`` in mm,
    both in the same axis order as ``shape``."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    center: tuple[float, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def extent(self) -> tuple[tuple[float, float], ...]:
        """(min, max) of the grid along each axis, in ``shape`` order."""
        return tuple(
            (c - n * s / 2, c + n * s / 2)
            for n, s, c in zip(self.shape, self.spacing, self.center, strict=True)
        )

    def to_astra(self) -> dict:
        """The ASTRA volume geometry dict (``astra.create_vol_geom`` layout)."""
        ext = self.extent
        if self.ndim == 2:
            (ymin, ymax), (xmin, xmax) = ext
            return {
                "GridRowCount": self.shape[0],
                "GridColCount": self.shape[1],
                "option": {
                    "WindowMinX": xmin,
                    "WindowMaxX": xmax,
                    "WindowMinY": ymin,
                    "WindowMaxY": ymax,
                },
            }
        (zmin, zmax), (ymin, ymax), (xmin, xmax) = ext
        return {
            "GridSliceCount": self.shape[0],
            "GridRowCount": self.shape[1],
            "GridColCount": self.shape[2],
            "option": {
                "WindowMinX": xmin,
                "WindowMaxX": xmax,
                "WindowMinY": ymin,
                "WindowMaxY": ymax,
                "WindowMinZ": zmin,
                "WindowMaxZ": zmax,
            },
        }

    @classmethod
    def from_astra(cls, vg: dict) -> VolumeGeometry:
        """The grid of an ASTRA volume geometry dict (``astra.create_vol_geom``, 2D or 3D)."""
        try:
            o = vg["option"]
            if "GridSliceCount" in vg:
                shape = (vg["GridSliceCount"], vg["GridRowCount"], vg["GridColCount"])
                lo = (o["WindowMinZ"], o["WindowMinY"], o["WindowMinX"])
                hi = (o["WindowMaxZ"], o["WindowMaxY"], o["WindowMaxX"])
            else:
                shape = (vg["GridRowCount"], vg["GridColCount"])
                lo = (o["WindowMinY"], o["WindowMinX"])
                hi = (o["WindowMaxY"], o["WindowMaxX"])
        except KeyError as e:
            raise ValueError(f"ASTRA volume geometry dict lacks {e.args[0]!r}") from None
        return volume(
            shape,
            tuple((h - lo_) / n for lo_, h, n in zip(lo, hi, shape, strict=True)),
            tuple((h + lo_) / 2 for lo_, h in zip(lo, hi, strict=True)),
        )


def volume(
    shape: Sequence[int],
    spacing: float | Sequence[float] = 1.0,
    center: float | Sequence[float] = 0.0,
) -> VolumeGeometry:
    """A 2D ``(H, W)`` or 3D ``(Z, H, W)`` voxel grid; ``spacing`` and ``center`` in mm."""
    shape = tuple(_positive_int("volume shape", n) for n in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"volume shape: expected (H, W) or (Z, H, W), got {shape}")
    spacing = _tuple("volume spacing", spacing, len(shape))
    for s in spacing:
        _positive("volume spacing", s)
    return VolumeGeometry(shape, spacing, _tuple("volume center", center, len(shape)))


@dataclass(frozen=True)
class ProjectionGeometry:
    """Base of all projection geometries; every one converts to a vector form."""

    @property
    def ndim(self) -> int:
        return 2 if isinstance(self, _Geometry2D) else 3

    @property
    def n_angles(self) -> int:
        return len(self.to_vec().vectors)

    @property
    def shape(self) -> tuple[int, ...]:
        """Projection data shape: ``(n_angles, det_count)`` or ``(rows, n_angles, cols)``."""
        vec = self.to_vec()
        if self.ndim == 2:
            return (len(vec.vectors), vec.det_count)
        return (vec.det_shape[0], len(vec.vectors), vec.det_shape[1])

    def to_vec(self) -> ProjectionGeometry:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def to_astra(self) -> dict:
        """The ASTRA projection geometry dict of this geometry."""
        raise ValueError(f"{type(self).__name__} has no ASTRA equivalent")


class _Geometry2D:
    pass


class _Geometry3D:
    pass


def _vectors(name: str, vectors, width: int) -> tuple[tuple[float, ...], ...]:
    arr = np.asarray(vectors, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != width or arr.shape[0] == 0:
        raise ValueError(
            f"{name}: expected an (n_angles >= 1, {width}) array, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: vectors contain NaN or inf")
    return tuple(tuple(float(v) for v in row) for row in arr)


@dataclass(frozen=True)
class ParallelVecGeometry(ProjectionGeometry, _Geometry2D):
    """2D parallel beam, one row ``(ray, d, u)`` per angle."""

    vectors: tuple[tuple[float, ...], ...]
    det_count: int

    def to_vec(self) -> ParallelVecGeometry:
        return self

    def to_astra(self) -> dict:
        return {
            "type": "parallel_vec",
            "DetectorCount": self.det_count,
            "Vectors": np.array(self.vectors),
        }


@dataclass(frozen=True)
class FanVecGeometry(ProjectionGeometry, _Geometry2D):
    """2D fan beam with a flat detector, one row ``(src, d, u)`` per angle."""

    vectors: tuple[tuple[float, ...], ...]
    det_count: int

    def to_vec(self) -> FanVecGeometry:
        return self

    def to_astra(self) -> dict:
        return {
            "type": "fanflat_vec",
            "DetectorCount": self.det_count,
            "Vectors": np.array(self.vectors),
        }


@dataclass(frozen=True)
class Parallel3DVecGeometry(ProjectionGeometry, _Geometry3D):
    """3D parallel beam, one row ``(ray, d, u, v)`` per angle; ``det_shape`` = (rows, cols)."""

    vectors: tuple[tuple[float, ...], ...]
    det_shape: tuple[int, int]

    def to_vec(self) -> Parallel3DVecGeometry:
        return self

    def to_astra(self) -> dict:
        return {
            "type": "parallel3d_vec",
            "DetectorRowCount": self.det_shape[0],
            "DetectorColCount": self.det_shape[1],
            "Vectors": np.array(self.vectors),
        }


@dataclass(frozen=True)
class ConeVecGeometry(ProjectionGeometry, _Geometry3D):
    """3D cone beam with a flat detector, one row ``(src, d, u, v)`` per angle."""

    vectors: tuple[tuple[float, ...], ...]
    det_shape: tuple[int, int]

    def to_vec(self) -> ConeVecGeometry:
        return self

    def to_astra(self) -> dict:
        return {
            "type": "cone_vec",
            "DetectorRowCount": self.det_shape[0],
            "DetectorColCount": self.det_shape[1],
            "Vectors": np.array(self.vectors),
        }


@dataclass(frozen=True)
class ParallelGeometry(ProjectionGeometry, _Geometry2D):
    """2D parallel beam: ``angles`` in radians, ``det_count`` bins of ``det_spacing`` mm."""

    angles: tuple[float, ...]
    det_count: int
    det_spacing: float = 1.0

    def to_vec(self) -> ParallelVecGeometry:
        a = np.array(self.angles)
        s, c = np.sin(a), np.cos(a)
        z = np.zeros_like(a)
        vec = np.stack([s, -c, z, z, c * self.det_spacing, s * self.det_spacing], axis=1)
        return ParallelVecGeometry(_vectors("parallel", vec, 6), self.det_count)

    def to_astra(self) -> dict:
        return {
            "type": "parallel",
            "DetectorWidth": self.det_spacing,
            "DetectorCount": self.det_count,
            "ProjectionAngles": np.array(self.angles),
        }


@dataclass(frozen=True)
class FanGeometry(ProjectionGeometry, _Geometry2D):
    """2D fan beam: source at ``src_orig`` mm from the rotation centre, detector ``orig_det``
    mm beyond it; ``curved=True`` is an arc detector centred on the source (bins of
    ``det_spacing`` mm of arc length), otherwise flat."""

    angles: tuple[float, ...]
    det_count: int
    det_spacing: float
    src_orig: float
    orig_det: float
    curved: bool = False

    @property
    def src_det(self) -> float:
        return self.src_orig + self.orig_det

    def to_vec(self) -> FanVecGeometry:
        if self.curved:
            raise ValueError("fan_arc has a curved detector and no flat vector form")
        a = np.array(self.angles)
        s, c = np.sin(a), np.cos(a)
        vec = np.stack(
            [
                s * self.src_orig,
                -c * self.src_orig,
                -s * self.orig_det,
                c * self.orig_det,
                c * self.det_spacing,
                s * self.det_spacing,
            ],
            axis=1,
        )
        return FanVecGeometry(_vectors("fan", vec, 6), self.det_count)

    @property
    def n_angles(self) -> int:
        return len(self.angles)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.angles), self.det_count)

    def to_astra(self) -> dict:
        if self.curved:
            raise ValueError("ASTRA has no 2D fan geometry with a curved (arc) detector")
        return {
            "type": "fanflat",
            "DetectorWidth": self.det_spacing,
            "DetectorCount": self.det_count,
            "ProjectionAngles": np.array(self.angles),
            "DistanceOriginSource": self.src_orig,
            "DistanceOriginDetector": self.orig_det,
        }


@dataclass(frozen=True)
class Parallel3DGeometry(ProjectionGeometry, _Geometry3D):
    """3D parallel beam rotating about ``z``; ``det_shape``/``det_spacing`` as (rows, cols)."""

    angles: tuple[float, ...]
    det_shape: tuple[int, int]
    det_spacing: tuple[float, float] = (1.0, 1.0)

    def to_vec(self) -> Parallel3DVecGeometry:
        a = np.array(self.angles)
        s, c = np.sin(a), np.cos(a)
        z = np.zeros_like(a)
        dv, du = self.det_spacing
        vec = np.stack([s, -c, z, z, z, z, c * du, s * du, z, z, z, z + dv], axis=1)
        return Parallel3DVecGeometry(_vectors("parallel3d", vec, 12), self.det_shape)

    def to_astra(self) -> dict:
        return {
            "type": "parallel3d",
            "DetectorSpacingX": self.det_spacing[1],
            "DetectorSpacingY": self.det_spacing[0],
            "DetectorRowCount": self.det_shape[0],
            "DetectorColCount": self.det_shape[1],
            "ProjectionAngles": np.array(self.angles),
        }


@dataclass(frozen=True)
class ConeGeometry(ProjectionGeometry, _Geometry3D):
    """Circular cone beam about ``z`` with a flat detector; distances in mm."""

    angles: tuple[float, ...]
    det_shape: tuple[int, int]
    det_spacing: tuple[float, float]
    src_orig: float
    orig_det: float

    def to_vec(self) -> ConeVecGeometry:
        a = np.array(self.angles)
        s, c = np.sin(a), np.cos(a)
        z = np.zeros_like(a)
        dv, du = self.det_spacing
        vec = np.stack(
            [
                s * self.src_orig,
                -c * self.src_orig,
                z,
                -s * self.orig_det,
                c * self.orig_det,
                z,
                c * du,
                s * du,
                z,
                z,
                z,
                z + dv,
            ],
            axis=1,
        )
        return ConeVecGeometry(_vectors("cone", vec, 12), self.det_shape)

    def to_astra(self) -> dict:
        return {
            "type": "cone",
            "DetectorSpacingX": self.det_spacing[1],
            "DetectorSpacingY": self.det_spacing[0],
            "DetectorRowCount": self.det_shape[0],
            "DetectorColCount": self.det_shape[1],
            "ProjectionAngles": np.array(self.angles),
            "DistanceOriginSource": self.src_orig,
            "DistanceOriginDetector": self.orig_det,
        }


def parallel(angles: Angles, det_count: int, det_spacing: float = 1.0) -> ParallelGeometry:
    """2D parallel beam; an integer ``angles`` spreads that many over [0, π)."""
    return ParallelGeometry(
        _angles(angles),
        _positive_int("det_count", det_count),
        _positive("det_spacing", det_spacing),
    )


def _fan(angles, det_count, det_spacing, src_orig, orig_det, curved) -> FanGeometry:
    src_orig = _positive("src_orig", src_orig)
    if not (math.isfinite(orig_det) and orig_det > -src_orig):
        raise ValueError(f"orig_det: the detector must lie beyond the source, got {orig_det!r}")
    return FanGeometry(
        _angles(angles, 2 * math.pi),
        _positive_int("det_count", det_count),
        _positive("det_spacing", det_spacing),
        src_orig,
        float(orig_det),
        curved,
    )


def fan_flat(
    angles: Angles, det_count: int, det_spacing: float, src_orig: float, orig_det: float
) -> FanGeometry:
    """2D fan beam, flat detector; an integer ``angles`` spreads that many over [0, 2π)."""
    return _fan(angles, det_count, det_spacing, src_orig, orig_det, curved=False)


def fan_arc(
    angles: Angles, det_count: int, det_spacing: float, src_orig: float, orig_det: float
) -> FanGeometry:
    """2D fan beam, arc detector centred on the source (``det_spacing`` = arc length per bin)."""
    return _fan(angles, det_count, det_spacing, src_orig, orig_det, curved=True)


def parallel3d(
    angles: Angles, det_shape: Sequence[int], det_spacing: float | Sequence[float] = 1.0
) -> Parallel3DGeometry:
    """3D parallel beam; ``det_shape`` = (rows, cols)."""
    det_shape = _tuple("det_shape", det_shape, 2, cast=int)
    for n in det_shape:
        _positive_int("det_shape", n)
    spacing = _tuple("det_spacing", det_spacing, 2)
    for s in spacing:
        _positive("det_spacing", s)
    return Parallel3DGeometry(_angles(angles), det_shape, spacing)


def cone(
    angles: Angles,
    det_shape: Sequence[int],
    det_spacing: float | Sequence[float],
    src_orig: float,
    orig_det: float,
) -> ConeGeometry:
    """Circular cone beam, flat detector; an integer ``angles`` spreads that many over [0, 2π)."""
    p = parallel3d(1, det_shape, det_spacing)
    fan = _fan(angles, 1, 1.0, src_orig, orig_det, curved=False)
    return ConeGeometry(fan.angles, p.det_shape, p.det_spacing, fan.src_orig, fan.orig_det)


def parallel_vec(vectors, det_count: int) -> ParallelVecGeometry:
    """2D parallel beam from ``(n_angles, 6)`` ASTRA vectors ``(ray, d, u)``."""
    return ParallelVecGeometry(
        _vectors("parallel_vec", vectors, 6), _positive_int("det_count", det_count)
    )


def fan_vec(vectors, det_count: int) -> FanVecGeometry:
    """2D flat-detector fan beam from ``(n_angles, 6)`` ASTRA vectors ``(src, d, u)``."""
    return FanVecGeometry(_vectors("fan_vec", vectors, 6), _positive_int("det_count", det_count))


def parallel3d_vec(vectors, det_shape: Sequence[int]) -> Parallel3DVecGeometry:
    """3D parallel beam from ``(n_angles, 12)`` ASTRA vectors ``(ray, d, u, v)``."""
    shape = _tuple("det_shape", det_shape, 2, cast=int)
    return Parallel3DVecGeometry(
        _vectors("parallel3d_vec", vectors, 12), tuple(_positive_int("det_shape", n) for n in shape)
    )


def cone_vec(vectors, det_shape: Sequence[int]) -> ConeVecGeometry:
    """3D cone beam from ``(n_angles, 12)`` ASTRA vectors ``(src, d, u, v)``."""
    shape = _tuple("det_shape", det_shape, 2, cast=int)
    return ConeVecGeometry(
        _vectors("cone_vec", vectors, 12), tuple(_positive_int("det_shape", n) for n in shape)
    )


ASTRA_TYPES = (
    "parallel",
    "parallel_vec",
    "fanflat",
    "fanflat_vec",
    "parallel3d",
    "parallel3d_vec",
    "cone",
    "cone_vec",
)


@overload
def from_astra(proj_geom: dict) -> ProjectionGeometry: ...
@overload
def from_astra(proj_geom: dict, vol_geom: dict) -> Preset: ...
def from_astra(proj_geom: dict, vol_geom: dict | None = None) -> ProjectionGeometry | Preset:
    """Our geometry for an ASTRA projection geometry dict (``astra.create_proj_geom`` output,
    any of ``ASTRA_TYPES``); with ``vol_geom`` (``astra.create_vol_geom`` output) the
    ``(volume, projection)`` pair, ready for ``Operator(*from_astra(proj_geom, vol_geom))``."""
    kind = proj_geom.get("type") if isinstance(proj_geom, dict) else None
    if kind not in ASTRA_TYPES:
        raise ValueError(
            f"ASTRA projection geometry type {kind!r} is not supported; expected one of "
            f"{', '.join(ASTRA_TYPES)}"
        )
    try:
        pg = _from_astra(proj_geom, kind)
    except KeyError as e:
        raise ValueError(f"ASTRA {kind!r} geometry dict lacks {e.args[0]!r}") from None
    if vol_geom is None:
        return pg
    return Preset(VolumeGeometry.from_astra(vol_geom), pg, f"astra {kind}")


def _from_astra(pg: dict, kind: str) -> ProjectionGeometry:
    if kind == "parallel":
        return parallel(pg["ProjectionAngles"], pg["DetectorCount"], pg["DetectorWidth"])
    if kind == "fanflat":
        return fan_flat(
            pg["ProjectionAngles"],
            pg["DetectorCount"],
            pg["DetectorWidth"],
            pg["DistanceOriginSource"],
            pg["DistanceOriginDetector"],
        )
    if kind == "parallel_vec":
        return parallel_vec(pg["Vectors"], pg["DetectorCount"])
    if kind == "fanflat_vec":
        return fan_vec(pg["Vectors"], pg["DetectorCount"])
    rows, cols = pg["DetectorRowCount"], pg["DetectorColCount"]
    if kind == "parallel3d":
        return parallel3d(
            pg["ProjectionAngles"], (rows, cols), (pg["DetectorSpacingY"], pg["DetectorSpacingX"])
        )
    if kind == "cone":
        return cone(
            pg["ProjectionAngles"],
            (rows, cols),
            (pg["DetectorSpacingY"], pg["DetectorSpacingX"]),
            pg["DistanceOriginSource"],
            pg["DistanceOriginDetector"],
        )
    if kind == "parallel3d_vec":
        return parallel3d_vec(pg["Vectors"], (rows, cols))
    return cone_vec(pg["Vectors"], (rows, cols))


@dataclass(frozen=True)
class Preset:
    """A named (volume, projection) pair, e.g. ``Operator(*svct(8, 128))``."""

    vol_geom: VolumeGeometry
    proj_geom: ProjectionGeometry
    name: str = field(default="")

    def __iter__(self):
        return iter((self.vol_geom, self.proj_geom))


def svct(n_views: int, n: int) -> Preset:
    """Sparse-view protocol: ``n_views`` parallel views over [0, π), ``2n`` unit bins."""
    vg = volume((n, n))
    return Preset(vg, parallel(_positive_int("n_views", n_views), 2 * n, 1.0), f"svct{n_views}")


def lact(n_views: int, arc_deg: float, n: int) -> Preset:
    """Limited-angle protocol: view k at ``k · arc_deg / n_views`` degrees, ``2n`` unit bins."""
    n_views = _positive_int("n_views", n_views)
    arc = math.radians(_positive("arc_deg", arc_deg))
    angles = np.arange(n_views) * (arc / n_views)
    return Preset(volume((n, n)), parallel(angles, 2 * n, 1.0), f"lact{arc_deg:g}")
