"""3D acquisition geometries in YAML: circular cone beam, 3D parallel beam and cone vectors.

One operator acts on the whole ``(Z, H, W)`` volume (nothing is slice-wise)::

    type: cone            # cone | parallel3d | cone_vec
    angles: 16            # int: evenly over [0°, 360°) (cone) or [0°, 180°) (parallel3d);
                          # a list of degrees; or {count: 200, start_deg: 0, stop_deg: 220}
    src_orig: 256         # cone: source to rotation axis
    orig_det: 192         # cone: rotation axis to detector
    det_shape: [160, 224] # detector rows × columns
    det_spacing: [1.5, 1.5]  # row and column pitch (one number: both); default 1
    det_offset: [0, 0]    # optional: shift of the detector centre along (rows, columns)
    voxel_size: 1.0       # volume voxel size (dz, dy, dx) or one number; default 1
    noise: false
    allow_truncation: false  # true: a detector short of the volume's projection only warns

``cone_vec`` replaces ``angles``, the distances, ``det_spacing`` and ``det_offset`` by
``vectors``: a file (text with 12 numbers per line, or ``.npy``; relative to the YAML file) or an
inline list of ASTRA ``cone_vec`` rows ``(src, d, u, v)`` in the volume's (x, y, z) axes, where
``z`` runs along the volume's first axis. Lengths are in the unit of ``voxel_size``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import operators as ops
from ctblend.io import DataError
from ctblend.yaml_fields import count, flag, number, numbers, parse_angles

__all__ = ["GEOMETRY_3D_TYPES", "Geometry3DConfig"]

GEOMETRY_3D_TYPES = ("cone", "parallel3d", "cone_vec")
_COMMON = {"type", "det_shape", "voxel_size", "noise", "allow_truncation"}
_KEYS = {
    "cone": _COMMON | {"angles", "src_orig", "orig_det", "det_spacing", "det_offset"},
    "parallel3d": _COMMON | {"angles", "det_spacing", "det_offset"},
    "cone_vec": _COMMON | {"vectors"},
}
_REQUIRED = {
    "cone": ("angles", "src_orig", "orig_det", "det_shape"),
    "parallel3d": ("angles", "det_shape"),
    "cone_vec": ("vectors", "det_shape"),
}


def _vectors(source: object, value: Any, base: Path | None) -> tuple[tuple[float, ...], ...]:
    """``vectors``: a file name (relative to ``base``) or an inline list of 12-number rows."""
    if isinstance(value, str):
        path = Path(value) if base is None else base / value
        if not path.is_file():
            raise DataError(f"{source}: vectors file {path} not found; expected (V, 12) numbers")
        try:
            array = (
                np.load(path, allow_pickle=False)
                if path.suffix == ".npy"
                else np.loadtxt(path, ndmin=2)
            )
        except ValueError as exc:
            raise DataError(
                f"{path}: cannot read vectors ({exc}); expected (V, 12) numbers"
            ) from exc
        source = path
    else:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{source}: vectors are not numbers; expected (V, 12)") from exc
    if array.ndim != 2 or array.shape[1] != 12 or array.shape[0] < 1:
        raise DataError(f"{source}: vectors have shape {array.shape}; expected (V, 12)")
    if not np.isfinite(array).all():
        raise DataError(f"{source}: vectors hold NaN or inf; expected finite numbers")
    return tuple(tuple(float(v) for v in row) for row in array)


@dataclass(frozen=True)
class Geometry3DConfig:
    """A 3D geometry in explicit form (angles in degrees, lengths in ``voxel_size`` units).

    ``det_shape`` = (rows, columns), ``det_spacing`` and ``det_offset`` = (row, column),
    ``voxel_size`` = (dz, dy, dx). Fields a type does not use keep their defaults.
    """

    type: str
    det_shape: tuple[int, int]
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    angles_deg: tuple[float, ...] = ()
    det_spacing: tuple[float, float] = (1.0, 1.0)
    det_offset: tuple[float, float] = (0.0, 0.0)
    src_orig: float | None = None
    orig_det: float | None = None
    vectors: tuple[tuple[float, ...], ...] = ()
    allow_truncation: bool = False

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], source: object = "geometry", base: Path | None = None
    ) -> Geometry3DConfig:
        """Build from the YAML schema of the module docstring; ``base`` resolves a vectors file."""
        data = dict(data)
        if "angles_deg" in data and "angles" not in data:  # the explicit form of to_dict
            data["angles"] = list(data.pop("angles_deg"))
        kind = data.get("type")
        if kind not in GEOMETRY_3D_TYPES:
            raise DataError(f"{source}: type is {kind!r}; expected one of {GEOMETRY_3D_TYPES}")
        unknown = set(data) - _KEYS[kind]
        if unknown:
            raise DataError(
                f"{source}: {sorted(unknown)} not used by a {kind} geometry; "
                f"expected keys {sorted(_KEYS[kind])}"
            )
        for key in _REQUIRED[kind]:
            if key not in data:
                raise DataError(f"{source}: '{key}' is missing; expected it for a {kind} geometry")
        shape = data["det_shape"]
        if not (isinstance(shape, Sequence) and not isinstance(shape, str) and len(shape) == 2):
            raise DataError(f"{source}: det_shape is {shape!r}; expected [rows, columns]")
        fields: dict[str, Any] = {
            "det_shape": tuple(count(source, "det_shape", n) for n in shape),
            "voxel_size": numbers(source, "voxel_size", data.get("voxel_size", 1.0), 3),
            "allow_truncation": flag(
                source, "allow_truncation", data.get("allow_truncation", False)
            ),
        }
        if kind == "cone_vec":
            fields["vectors"] = _vectors(source, data["vectors"], base)
        else:
            arc = 360.0 if kind == "cone" else 180.0
            fields["angles_deg"] = parse_angles(source, data["angles"], arc)
            fields["det_spacing"] = numbers(source, "det_spacing", data.get("det_spacing", 1.0), 2)
            offset = data.get("det_offset", 0.0)
            fields["det_offset"] = numbers(source, "det_offset", offset, 2, positive=False)
        if kind == "cone":
            fields["src_orig"] = number(source, "src_orig", data["src_orig"])
            fields["orig_det"] = number(source, "orig_det", data["orig_det"])
        return cls(type=kind, **fields)

    def to_dict(self) -> dict[str, Any]:
        """The explicit form, with only the keys this type uses (JSON- and YAML-ready)."""
        d: dict[str, Any] = {
            "type": self.type,
            "det_shape": list(self.det_shape),
            "voxel_size": list(self.voxel_size),
        }
        if self.allow_truncation:
            d["allow_truncation"] = True
        if self.type == "cone_vec":
            d["vectors"] = [list(row) for row in self.vectors]
            return d
        d.update(
            angles_deg=list(self.angles_deg),
            det_spacing=list(self.det_spacing),
            det_offset=list(self.det_offset),
        )
        if self.type == "cone":
            d.update(src_orig=self.src_orig, orig_det=self.orig_det)
        return d

    @property
    def n_views(self) -> int:
        return len(self.vectors) if self.type == "cone_vec" else len(self.angles_deg)

    def volume(self, shape: Sequence[int], refine: int = 1) -> ops.VolumeGeometry:
        """The voxel grid of a ``(Z, H, W)`` volume, centred on the rotation axis; ``refine``:
        ``shape`` counts voxels ``refine`` times smaller in every axis."""
        return ops.volume(shape, spacing=tuple(s / refine for s in self.voxel_size))

    def projection(self) -> ops.ProjectionGeometry:
        """The ``operators`` projection geometry (a vector form when the detector is offset)."""
        if self.type == "cone_vec":
            return ops.cone_vec(self.vectors, self.det_shape)
        angles = [math.radians(a) for a in self.angles_deg]
        if self.type == "cone":
            pg = ops.cone(angles, self.det_shape, self.det_spacing, self.src_orig, self.orig_det)
        else:
            pg = ops.parallel3d(angles, self.det_shape, self.det_spacing)
        if self.det_offset == (0.0, 0.0):
            return pg
        vec = np.array(pg.to_vec().vectors)
        (dv, du), (ov, ou) = self.det_spacing, self.det_offset
        vec[:, 3:6] += vec[:, 6:9] * (ou / du) + vec[:, 9:12] * (ov / dv)
        factory = ops.cone_vec if self.type == "cone" else ops.parallel3d_vec
        return factory(vec, self.det_shape)
