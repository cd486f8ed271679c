"""Acquisition setups and measurement files: what ``ctblend simulate`` writes and ``recon`` reads.

An :class:`Acquisition` is either a named protocol (``svct8``, ``lact90+noise``, …, see
:mod:`ctblend.protocol`) or any 2D geometry applied to every axial slice, described in YAML::

    type: fan_flat        # parallel | fan_flat | fan_arc
    angles: 360           # int: that many, evenly over [0°, 180°) (parallel) or [0°, 360°) (fan);
                          # a list of angles in degrees; or {count: 90, start_deg: 0, stop_deg: 90}
                          # (stop excluded)
    det_count: 256
    det_spacing: 1.5      # default 1
    src_orig: 256         # fan only: source to rotation centre
    orig_det: 128         # fan only: rotation centre to detector
    voxel_size: 1.0       # volume pixel size in the same length unit (default 1: voxel units)
    noise: false          # Poisson noise as in the protocols' +noise variant
    allow_truncation: false  # true: a detector narrower than the volume's projection is a
                          # warning (interior CT), not an error

Before any work, :meth:`Acquisition.operator` checks the acquisition against the volume
(:mod:`ctblend.acquisition_checks`): the source outside the volume box, the detector covering
the volume's projection at every view.

3D geometries (``cone``, ``parallel3d``, ``cone_vec``: one operator on the whole volume) are
described in :mod:`ctblend.geometry3d`.

Lengths are in units of ``voxel_size`` (default: one volume pixel). A measurement file is HDF5
with datasets ``sinogram`` ``(Z, V, D)`` (3D: ``projections`` ``(V, rows, cols)``), optionally
``truth`` ``(Z, H, W)`` in [0, 1] units, the ``spacing_mm`` attribute of the volume and the
attributes listed in :func:`write_measurements`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml

import operators as ops
from ctblend.acquisition_checks import check_acquisition
from ctblend.geometry3d import GEOMETRY_3D_TYPES, Geometry3DConfig
from ctblend.io import DataError, write_hdf5
from ctblend.io.hdf5 import add_dataset
from ctblend.io.output import atomic_path
from ctblend.io.volume import check_finite
from ctblend.protocol import PHOTONS, Protocol, get_protocol
from ctblend.yaml_fields import count, flag, number, parse_angles

__all__ = [
    "FORMAT_MEASUREMENTS",
    "GEOMETRY_TYPES",
    "Acquisition",
    "GeometryConfig",
    "Measurements",
    "geometry_from_dict",
    "geometry_from_yaml",
    "read_arrays",
    "read_attrs",
    "read_measurements",
    "write_arrays",
    "write_measurements",
]

GEOMETRY_TYPES = ("parallel", "fan_flat", "fan_arc")
FORMAT_MEASUREMENTS = "ctblend-measurements"
SIMULATION_REFINE = 2
"""How much finer than the reconstruction grid a 3D acquisition's measurements are simulated."""
PROJECTIONS = "projections"
"""The dataset of a 3D acquisition's measurements: ``(V, rows, cols)``, one image per view."""
_KEYS = {
    "type",
    "angles",
    "det_count",
    "det_spacing",
    "src_orig",
    "orig_det",
    "voxel_size",
    "noise",
    "allow_truncation",
}


@dataclass(frozen=True)
class GeometryConfig:
    """A 2D slice geometry in explicit form (angles in degrees, lengths in ``voxel_size`` units)."""

    type: str
    angles_deg: tuple[float, ...]
    det_count: int
    det_spacing: float = 1.0
    src_orig: float | None = None
    orig_det: float | None = None
    voxel_size: float = 1.0
    allow_truncation: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: object = "geometry") -> GeometryConfig:
        """Build from the YAML schema of the module docstring (``noise`` is not read here)."""
        if not isinstance(data, Mapping):
            raise DataError(f"{source}: expected a mapping with type, angles, det_count, ...")
        data = dict(data)
        if "angles_deg" in data and "angles" not in data:  # the explicit form of to_dict
            data["angles"] = list(data.pop("angles_deg"))
        unknown = set(data) - _KEYS
        if unknown:
            raise DataError(
                f"{source}: unknown geometry keys {sorted(unknown)}; expected {sorted(_KEYS)}"
            )
        kind = data.get("type")
        if kind not in GEOMETRY_TYPES:
            raise DataError(f"{source}: type is {kind!r}; expected one of {GEOMETRY_TYPES}")
        for key in ("angles", "det_count"):
            if key not in data:
                raise DataError(f"{source}: '{key}' is missing; expected it for a {kind} geometry")
        det_count = count(source, "det_count", data["det_count"])
        fan = kind != "parallel"
        distances = {}
        for key in ("src_orig", "orig_det"):
            if fan and key not in data:
                raise DataError(f"{source}: '{key}' is missing; expected it for a {kind} geometry")
            if not fan and data.get(key) is not None:
                raise DataError(f"{source}: '{key}' is given; a parallel geometry has no source")
            if fan:
                distances[key] = number(source, key, data[key], positive=key == "src_orig")
        return cls(
            type=kind,
            angles_deg=parse_angles(source, data["angles"], 180.0 if kind == "parallel" else 360.0),
            det_count=det_count,
            det_spacing=number(source, "det_spacing", data.get("det_spacing", 1.0)),
            voxel_size=number(source, "voxel_size", data.get("voxel_size", 1.0)),
            allow_truncation=flag(source, "allow_truncation", data.get("allow_truncation", False)),
            **distances,
        )

    @classmethod
    def from_projection(cls, pg: ops.ProjectionGeometry) -> GeometryConfig:
        """The explicit form of a 2D parallel or fan projection geometry (voxel units)."""
        angles = tuple(math.degrees(a) for a in pg.angles)
        if isinstance(pg, ops.ParallelGeometry):
            return cls("parallel", angles, pg.det_count, pg.det_spacing)
        if isinstance(pg, ops.FanGeometry):
            kind = "fan_arc" if pg.curved else "fan_flat"
            return cls(kind, angles, pg.det_count, pg.det_spacing, pg.src_orig, pg.orig_det)
        raise ValueError(f"no YAML form for {type(pg).__name__}; expected parallel or fan")

    def projection(self) -> ops.ProjectionGeometry:
        """The ``operators`` projection geometry."""
        angles = [math.radians(a) for a in self.angles_deg]
        if self.type == "parallel":
            return ops.parallel(angles, self.det_count, self.det_spacing)
        factory = ops.fan_flat if self.type == "fan_flat" else ops.fan_arc
        return factory(angles, self.det_count, self.det_spacing, self.src_orig, self.orig_det)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["angles_deg"] = list(self.angles_deg)
        if self.type == "parallel":
            d.pop("src_orig")
            d.pop("orig_det")
        if not self.allow_truncation:
            d.pop("allow_truncation")
        return d


AnyGeometry = GeometryConfig | Geometry3DConfig


def geometry_from_dict(
    data: Mapping[str, Any], source: object = "geometry", base: Path | None = None
) -> AnyGeometry:
    """A 2D (slice-wise) or 3D geometry from its YAML or explicit dict form, by ``type``."""
    if not isinstance(data, Mapping):
        raise DataError(f"{source}: expected a mapping with type, angles, det_count, ...")
    if data.get("type") in GEOMETRY_3D_TYPES:
        return Geometry3DConfig.from_dict(data, source, base)
    if data.get("type") not in GEOMETRY_TYPES:
        raise DataError(
            f"{source}: type is {data.get('type')!r}; expected one of "
            f"{GEOMETRY_TYPES + GEOMETRY_3D_TYPES}"
        )
    return GeometryConfig.from_dict(data, source)


def geometry_from_yaml(path: str | os.PathLike) -> tuple[AnyGeometry, bool]:
    """Read a geometry YAML file (2D: module docstring; 3D: :mod:`ctblend.geometry3d`) →
    (geometry, noise)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: geometry file not found; expected a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"{path}: invalid YAML ({first}); expected a geometry mapping") from exc
    if not isinstance(data, Mapping):
        raise DataError(f"{path}: expected a mapping with type, angles, det_count, ...")
    data = dict(data)
    noise = data.pop("noise", False)
    if not isinstance(noise, bool):
        raise DataError(f"{path}: noise is {noise!r}; expected true or false")
    return geometry_from_dict(data, path, base=path.parent), noise


def _arc_deg(angles: Sequence[float]) -> float | None:
    """The arc that evenly spaced views cover (n × step), the span of uneven ones; None
    without angles."""
    if not angles:
        return None
    a = np.sort(np.asarray(angles, dtype=np.float64))
    steps = np.diff(a)
    if len(a) > 1 and np.allclose(steps, steps[0], rtol=1e-6):
        return round(float(len(a) * steps[0]), 6)
    return round(float(a[-1] - a[0]), 6)


@dataclass(frozen=True)
class Acquisition:
    """How measurements are taken: a named ``protocol`` or a custom ``geometry`` (+ ``noise``).

    ``operator((Z, H, W))`` builds the operator (slice-wise for a protocol or a 2D geometry, one
    operator on the whole volume for a 3D geometry); ``simulate`` takes measurements.
    """

    protocol: str | None = None
    geometry: AnyGeometry | None = None
    noise: bool = False
    source: str | None = field(default=None, compare=False)
    """Where the geometry came from (its YAML file), for messages."""

    def __post_init__(self) -> None:
        if (self.protocol is None) == (self.geometry is None):
            raise DataError("an acquisition needs exactly one of a protocol or a geometry")
        if self.protocol is not None:
            protocol = get_protocol(self.protocol)
            object.__setattr__(self, "noise", protocol.noise)

    @property
    def name(self) -> str:
        if self.protocol is not None:
            return self.protocol
        return f"{self.geometry.type}{self._n_views}" + ("+noise" if self.noise else "")

    def describe(self) -> str:
        """The acquisition in words: ``svct8: 8 parallel views over 180°``."""
        if self.protocol is not None:
            protocol = get_protocol(self.protocol)
            what = f"{protocol.n_views} parallel views over {protocol.arc_deg:g}°"
            if protocol.limited_angle:
                what += " (limited angle)"
        else:
            kind = {
                "parallel": "parallel",
                "fan_flat": "flat-detector fan-beam",
                "fan_arc": "arc-detector fan-beam",
                "cone": "cone-beam",
                "parallel3d": "3D parallel",
                "cone_vec": "cone-beam (vectors)",
            }[self.geometry.type]
            what = f"{self._n_views} {kind} views"
            arc = _arc_deg(getattr(self.geometry, "angles_deg", ()))
            if arc is not None:
                what += f" over {arc:g}°"
        if self.noise:
            what += f", Poisson noise (I0 = {PHOTONS:.0e} per bin)".replace("e+0", "e")
        return f"{self.name}: {what}"

    @property
    def _n_views(self) -> int:
        if isinstance(self.geometry, Geometry3DConfig):
            return self.geometry.n_views
        return len(self.geometry.angles_deg)

    @property
    def is_3d(self) -> bool:
        """True when one operator acts on the whole volume (projections ``(V, rows, cols)``)."""
        return isinstance(self.geometry, Geometry3DConfig)

    def _protocol(self) -> Protocol:
        if self.protocol is not None:
            return get_protocol(self.protocol)
        return Protocol(self.name, self._n_views, 360.0, False, self.noise)

    def operator(self, shape: Sequence[int]) -> ops.Operator:
        """The operator for a ``(Z, H, W)`` volume, once the acquisition passed
        :func:`~ctblend.acquisition_checks.check_acquisition` for it (one-line DataError)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3:
            raise DataError(f"acquisition {self.name}: volume shape {shape}; expected (Z, H, W)")
        if self.protocol is not None:  # a preset: parallel, 2n bins cover an n × n slice
            return get_protocol(self.protocol).operator(shape)
        if self.is_3d:
            vg = self.geometry.volume(shape)
        else:
            vg = ops.volume(shape[1:], spacing=self.geometry.voxel_size)
        pg = self.geometry.projection()
        where = f"{self.source or self.name} on a {' × '.join(map(str, shape))} volume"
        check_acquisition(vg, pg, where, self.geometry.allow_truncation)
        if not self.is_3d:
            size = self.geometry.voxel_size
            vg = ops.volume(shape, spacing=(1.0, size, size))
        return ops.Operator(vg, pg)

    def resolved_geometry(self, shape: Sequence[int]) -> AnyGeometry:
        """The explicit geometry for ``shape`` (a protocol's depends on the slice size)."""
        if self.geometry is not None:
            return self.geometry
        return GeometryConfig.from_projection(self.operator(shape).proj_geom)

    def simulate(
        self, A: ops.Operator, x: torch.Tensor, pixel_mm: float, seed: int = 0
    ) -> torch.Tensor:
        """Measurements ``A.range_shape`` of ``x`` ``(Z, H, W)`` in [0, 1] units; ``pixel_mm`` is
        the in-plane pixel size in mm (sets the path lengths of the Poisson noise).

        A 3D acquisition measures ``x`` on a grid ``SIMULATION_REFINE`` times finer in every axis
        (each voxel split into sub-voxels of its value: the same object) through the same
        projection geometry, so that reconstructing with ``A`` is not an inverse crime.
        """
        if self.geometry is None:
            size = 1.0
        elif self.is_3d:
            size = self.geometry.voxel_size[2]
            k = SIMULATION_REFINE
            x = x.repeat_interleave(k, -3).repeat_interleave(k, -2).repeat_interleave(k, -1)
            A = ops.Operator(self.geometry.volume(x.shape[-3:], refine=k), A.proj_geom)
        else:
            size = self.geometry.voxel_size
        return self._protocol().simulate(A, x, voxel_mm=pixel_mm / size, seed=seed)

    def to_attrs(self, shape: Sequence[int]) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "geometry": self.resolved_geometry(shape).to_dict(),
            "noise": self.noise,
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], source: object) -> Acquisition:
        protocol = attrs.get("protocol")
        if protocol:
            return cls(protocol=str(protocol))
        geometry = attrs.get("geometry")
        if not isinstance(geometry, Mapping):
            raise DataError(f"{source}: no 'protocol' or 'geometry' attribute; expected one")
        return cls(
            geometry=geometry_from_dict(geometry, source), noise=bool(attrs.get("noise", False))
        )


# ---------------------------------------------------------------------------------------------
# HDF5 files with several datasets
# ---------------------------------------------------------------------------------------------


def write_arrays(
    path: str | os.PathLike,
    arrays: Mapping[str, Any],
    *,
    spacing_mm: Sequence[float] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write several datasets (``name → array``; ``"a/b"`` makes group ``a``) atomically.

    The first goes through :func:`ctblend.io.write_hdf5` (its layout and attribute encoding),
    the others are added to that temporary file with the same chunking before the rename.
    """
    path = Path(path)
    names = list(arrays)
    if not names:
        raise DataError(f"{path}: nothing to write; expected at least one array")
    with atomic_path(path) as tmp:
        write_hdf5(tmp, arrays[names[0]], spacing_mm=spacing_mm, attrs=attrs, dataset=names[0])
        with h5py.File(tmp, "a") as f:
            for name in names[1:]:
                add_dataset(f, name, arrays[name])
    return path


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decoded(attrs: h5py.AttributeManager) -> dict[str, Any]:
    """File attributes as Python values, the JSON-encoded ones (``json_attrs``) decoded."""
    decoded = {key: _decode(attrs[key]) for key in attrs}
    for key in json.loads(decoded.pop("json_attrs", "[]")):
        decoded[key] = json.loads(decoded[key])
    return decoded


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected an HDF5 file written by ctblend")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"{path}: cannot read as HDF5 ({first}); expected a complete file") from exc


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded file attributes of ``path`` (no dataset is read)."""
    with _open(Path(path)) as f:
        return _decoded(f.attrs)


def read_arrays(
    path: str | os.PathLike, required: Sequence[str] = ()
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All datasets (by path inside the file) and the decoded file attributes of ``path``."""
    path = Path(path)
    try:
        with _open(path) as f:
            arrays: dict[str, np.ndarray] = {}
            f.visititems(
                lambda name, obj: (
                    arrays.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None
                )
            )
            attrs = _decoded(f.attrs)
    except OSError as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"{path}: cannot read as HDF5 ({first}); expected a complete file") from exc
    missing = [name for name in required if name not in arrays]
    if missing:
        raise DataError(
            f"{path}: no dataset {missing[0]!r} (found {sorted(arrays)}); expected a file "
            "written by `ctblend simulate`"
        )
    return arrays, attrs


def _file_shape(range_shape: Sequence[int], acquisition: Acquisition) -> tuple[int, ...]:
    """The stored shape of measurements of ``range_shape``: ``(V, rows, cols)`` in 3D."""
    if acquisition.is_3d:
        rows, views, cols = range_shape
        return (views, rows, cols)
    return tuple(range_shape)


@dataclass(frozen=True)
class Measurements:
    """A measurement file: ``sinogram`` in the operator's layout (``(Z, V, D)`` slice-wise,
    ``(rows, V, cols)`` in 3D; the file stores 3D projections ``(V, rows, cols)``), optional
    truth ``(Z, H, W)`` in [0, 1]."""

    sinogram: np.ndarray
    acquisition: Acquisition
    volume_shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    truth: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def write_measurements(
    path: str | os.PathLike,
    sinogram: Any,
    acquisition: Acquisition,
    *,
    volume_shape: Sequence[int],
    spacing_mm: Sequence[float],
    truth: Any | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a measurement file atomically.

    Attributes: ``format`` = ``ctblend-measurements``, ``protocol`` (name or None), ``geometry``
    (explicit, JSON), ``noise``, ``volume_shape``, ``spacing_mm`` (of the volume) and ``attrs``
    (``simulate`` adds scale, seed, source, slices, versions).
    """
    volume_shape = tuple(int(s) for s in volume_shape)
    if acquisition.is_3d:  # the operator's (rows, V, cols) → one projection image per view
        arrays = {PROJECTIONS: torch.as_tensor(sinogram).transpose(0, 1)}
    else:
        arrays = {"sinogram": sinogram}
    if truth is not None:
        arrays["truth"] = truth
    meta = {
        "kind": FORMAT_MEASUREMENTS,
        **acquisition.to_attrs(volume_shape),
        "volume_shape": list(volume_shape),
        **dict(attrs or {}),
    }
    return write_arrays(path, arrays, spacing_mm=spacing_mm, attrs=meta)


def read_measurements(path: str | os.PathLike) -> Measurements:
    """Read a file written by :func:`write_measurements`; the shapes are checked."""
    arrays, attrs = read_arrays(path)
    acquisition = Acquisition.from_attrs(attrs, path)
    name = PROJECTIONS if acquisition.is_3d else "sinogram"
    if name not in arrays:
        raise DataError(
            f"{path}: no dataset {name!r} (found {sorted(arrays)}); expected a file written by "
            "`ctblend simulate`"
        )
    shape = attrs.get("volume_shape")
    if not (isinstance(shape, list) and len(shape) == 3):
        raise DataError(f"{path}: volume_shape attribute is {shape!r}; expected [Z, H, W]")
    shape = tuple(int(s) for s in shape)
    spacing = attrs.pop("spacing_mm", None)
    if spacing is None or len(spacing) != 3:
        raise DataError(f"{path}: spacing_mm attribute is {spacing!r}; expected [dz, dy, dx]")
    sinogram = np.asarray(arrays[name], dtype=np.float32)
    check_finite(sinogram, f"{path}: dataset {name!r}", "line integrals")
    if acquisition.is_3d and sinogram.ndim == 3:
        sinogram = np.ascontiguousarray(sinogram.transpose(1, 0, 2))
    expected = acquisition.operator(shape).range_shape
    if tuple(sinogram.shape) != tuple(expected):
        stored = _file_shape(expected, acquisition)
        raise DataError(
            f"{path}: {name} has shape {arrays[name].shape}; expected {stored} for "
            f"{acquisition.name} on a volume of {shape}"
        )
    truth = arrays.get("truth")
    if truth is not None and tuple(truth.shape) != shape:
        raise DataError(f"{path}: truth has shape {truth.shape}; expected {shape}")
    if truth is not None:
        check_finite(np.asarray(truth), f"{path}: dataset 'truth'", "values in [0, 1] units")
    return Measurements(
        sinogram=sinogram,
        acquisition=acquisition,
        volume_shape=shape,
        spacing_mm=tuple(float(s) for s in spacing),
        truth=None if truth is None else np.asarray(truth, dtype=np.float32),
        attrs=attrs,
    )
