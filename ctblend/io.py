"""Reading and writing CT volumes: DICOM series, HDF5, NIfTI and NumPy files.

Every reader returns a :class:`CTVolume` in one axis convention (the one of ``../shared/data/ct``):

* axis 0 (``z``): slice index, increasing inferior → superior (DICOM patient LPS ``+z``);
* axis 1 (``y``, rows): increasing anterior → posterior (LPS ``+y``);
* axis 2 (``x``, columns): increasing patient right → patient left (LPS ``+x``).

``imshow(vol.hu[k])`` shows the usual radiological axial view. ``spacing_mm`` is ``(dz, dy, dx)``.
Bad input raises :class:`DataError` (a ``ValueError``) with a one-line message naming the file, the
offending value and what was expected. Writers are atomic: they write a temporary file beside the
target and rename it, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = [
    "CTVolume",
    "DataError",
    "DataWarning",
    "open_hdf5_volume",
    "read_dicom_series",
    "read_hdf5",
    "read_nifti",
    "read_numpy",
    "read_volume",
    "write_dicom_series",
    "write_hdf5",
    "write_volume",
]

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NUMPY_SUFFIXES = (".npy", ".npz")
# Files with these suffixes are documentation beside a DICOM series: ignored without a warning.
DOC_SUFFIXES = (".json", ".txt", ".md", ".csv", ".xml", ".html", ".pdf", ".log", ".png", ".jpg")
# Attribute names with a fixed meaning in ctblend HDF5 files (not free metadata).
RESERVED_ATTRS = ("spacing_mm", "json_attrs", "format", "path")


class DataError(ValueError):
    """Bad input data: the message names the file, the value found and what was expected."""


class DataWarning(UserWarning):
    """Input that was accepted with a change (e.g. a non-DICOM file skipped in a series folder)."""


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT volume in Hounsfield units.

    ``hu``: ``(Z, H, W)`` int16 or float32 in the module's axis convention; ``spacing_mm``:
    ``(dz, dy, dx)`` in mm; ``meta``: provenance (``format``, ``path`` and format-specific keys).
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        source = self.meta.get("path", "CTVolume")
        hu = self.hu
        if not isinstance(hu, np.ndarray) or hu.ndim != 3:
            shape = getattr(hu, "shape", type(hu).__name__)
            raise DataError(f"{source}: volume has shape {shape}; expected a 3-D array (Z, H, W)")
        if hu.dtype not in (np.int16, np.float32):
            raise DataError(f"{source}: volume dtype is {hu.dtype}; expected int16 or float32")
        object.__setattr__(self, "spacing_mm", _check_spacing(self.spacing_mm, source))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, H, W)``."""
        return tuple(self.hu.shape)


def _check_spacing(spacing: Any, source: object) -> tuple[float, float, float]:
    try:
        values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        values = np.array([])
    if values.shape != (3,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise DataError(
            f"{source}: spacing_mm is {spacing!r}; expected three positive numbers (dz, dy, dx) mm"
        )
    return (float(values[0]), float(values[1]), float(values[2]))


def _volume_dtype(array: np.ndarray, source: object) -> np.ndarray:
    """int16 and float32 pass; other numeric types become float32 (exact for |v| < 2**24)."""
    if array.dtype in (np.int16, np.float32):
        return array
    if array.dtype.kind not in "iuf":
        raise DataError(f"{source}: array dtype is {array.dtype}; expected a numeric volume")
    return array.astype(np.float32)


def _require_3d(shape: tuple[int, ...], source: object, what: str = "array") -> None:
    if len(shape) != 3:
        raise DataError(
            f"{source}: {what} has shape {tuple(shape)} ({len(shape)}-D); "
            "expected a 3-D volume (Z, H, W)"
        )
    if min(shape) < 1:
        raise DataError(f"{source}: {what} has shape {tuple(shape)}; expected no empty axis")


# ---------------------------------------------------------------------------------------------
# Orientation: any axis-aligned voxel grid → (z, y, x) increasing along LPS (+z, +y, +x)
# ---------------------------------------------------------------------------------------------

_AXIS_CODES = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}


def _to_lps_axes(
    array: np.ndarray,
    directions: np.ndarray,
    spacing: Sequence[float],
    origin: np.ndarray,
    source: object,
) -> tuple[np.ndarray, tuple[float, float, float], dict[str, Any]]:
    """Permute/flip ``array`` so its axes run along LPS (+z, +y, +x).

    ``directions[a]`` is the unit LPS vector of increasing index along array axis ``a``, ``origin``
    the LPS position of voxel ``[0, 0, 0]``. Returns the array, its spacing and orientation meta.
    """
    directions = np.asarray(directions, dtype=np.float64)
    lps_axis = np.argmax(np.abs(directions), axis=1)
    if sorted(lps_axis.tolist()) != [0, 1, 2]:
        raise DataError(
            f"{source}: voxel axes {directions.round(3).tolist()} do not map one-to-one onto the "
            "patient axes; expected an (almost) axis-aligned grid"
        )
    signs = np.sign(directions[np.arange(3), lps_axis]).astype(int)
    codes = "".join(_AXIS_CODES[(int(a), int(s))] for a, s in zip(lps_axis, signs, strict=True))
    cosines = np.abs(directions[np.arange(3), lps_axis])
    oblique = bool(np.min(cosines) < 1 - 1e-4)
    if oblique:
        warnings.warn(
            f"{source}: oblique voxel grid (axes {codes}, smallest direction cosine "
            f"{np.min(cosines):.4f}); using the nearest axis-aligned orientation",
            DataWarning,
            stacklevel=3,
        )
    origin = np.asarray(origin, dtype=np.float64).copy()
    for axis in range(3):
        if signs[axis] < 0:
            array = np.flip(array, axis=axis)
            origin += (array.shape[axis] - 1) * spacing[axis] * directions[axis]
    order = [int(np.flatnonzero(lps_axis == k)[0]) for k in (2, 1, 0)]
    array = np.ascontiguousarray(np.transpose(array, order))
    new_spacing = (float(spacing[order[0]]), float(spacing[order[1]]), float(spacing[order[2]]))
    meta = {
        "source_axis_codes": codes,
        "oblique": oblique,
        "first_voxel_center_lps_mm": [float(v) for v in origin],
    }
    return array, new_spacing, meta


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------


def _read_dicom_header(path: Path):
    """Header of ``path`` (no pixels), or None when it is not a DICOM image."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        required: tuple[str, ...] = ("Rows",)
    except InvalidDicomError:
        try:  # files without the 128-byte preamble (old ACR-NEMA style)
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            required = ("Rows", "ImagePositionPatient")
        except Exception:  # noqa: BLE001 - any parse failure means "not DICOM"
            return None
    except Exception:  # noqa: BLE001
        return None
    try:
        return ds if all(keyword in ds for keyword in required) else None
    except Exception:  # noqa: BLE001 - a forced parse of a non-DICOM file may fail here
        return None


def _float_list(ds, keyword: str, count: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    try:
        values = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        values = np.array([])
    if values.shape != (count,):
        raise DataError(
            f"{path}: {keyword} is {value!r}; expected {count} numbers for a CT slice in a series"
        )
    return values


def _scan_folder(folder: Path) -> tuple[list[tuple[Path, Any]], list[str]]:
    """DICOM image headers of ``folder`` and the names of skipped non-DICOM files."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    headers, skipped = [], []
    for path in files:
        if path.name.lower().endswith(DOC_SUFFIXES):
            continue
        ds = _read_dicom_header(path)
        if ds is None:
            skipped.append(path.name)
        else:
            headers.append((path, ds))
    if skipped:
        warnings.warn(
            f"{folder}: skipped {len(skipped)} file(s) that are not DICOM images: "
            + ", ".join(skipped[:10])
            + (" ..." if len(skipped) > 10 else ""),
            DataWarning,
            stacklevel=3,
        )
    if not headers:
        raise DataError(f"{folder}: no DICOM image files found; expected a folder with one series")
    series: dict[str, list[str]] = {}
    for path, ds in headers:
        series.setdefault(str(ds.get("SeriesInstanceUID", "<missing>")), []).append(path.name)
    if len(series) > 1:
        counts = "; ".join(f"{uid}: {len(names)} files" for uid, names in series.items())
        raise DataError(
            f"{folder}: {len(series)} series mixed in one folder ({counts}); "
            "expected exactly one SeriesInstanceUID — put each series in its own folder"
        )
    if len(headers) < 2:
        raise DataError(
            f"{folder}: only {len(headers)} DICOM slice ({headers[0][0].name}); "
            "expected a series of at least 2 slices to form a volume"
        )
    return headers, skipped


def _check_slices(headers: list[tuple[Path, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same size, orientation and pixel spacing in every slice: ``(iop, pixel_spacing, ipp)``."""
    ref_path, ref = headers[0]
    ref_iop = _float_list(ref, "ImageOrientationPatient", 6, ref_path)
    ref_ps = _float_list(ref, "PixelSpacing", 2, ref_path)
    ref_size = (int(ref.get("Rows", 0)), int(ref.get("Columns", 0)))
    positions = []
    for path, ds in headers:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames != 1 or int(ds.get("SamplesPerPixel", 1)) != 1:
            raise DataError(
                f"{path}: NumberOfFrames={frames}, SamplesPerPixel={ds.get('SamplesPerPixel')}; "
                "expected single-frame grey-level slices (one file per slice)"
            )
        size = (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))
        if size != ref_size:
            raise DataError(
                f"{path}: slice size (Rows, Columns) = {size}; expected {ref_size} "
                f"as in {ref_path.name} (same size for every slice)"
            )
        iop = _float_list(ds, "ImageOrientationPatient", 6, path)
        if not np.allclose(iop, ref_iop, atol=1e-4):
            raise DataError(
                f"{path}: ImageOrientationPatient = {iop.tolist()}; expected {ref_iop.tolist()} "
                f"as in {ref_path.name} (same orientation for every slice)"
            )
        ps = _float_list(ds, "PixelSpacing", 2, path)
        if not np.allclose(ps, ref_ps, rtol=1e-5, atol=1e-6):
            raise DataError(
                f"{path}: PixelSpacing = {ps.tolist()}; expected {ref_ps.tolist()} "
                f"as in {ref_path.name} (same pixel spacing for every slice)"
            )
        positions.append(_float_list(ds, "ImagePositionPatient", 3, path))
    return ref_iop, ref_ps, np.asarray(positions)


def _check_spacing_along(
    folder: Path, names: list[str], along: np.ndarray, in_plane: np.ndarray
) -> float:
    """Check positions along the normal (uniform, no duplicates) and in-plane steps ``(Z-1, 3)``
    (none: no tilt or shear); return the slice spacing dz."""
    steps = np.diff(along)
    dz = float(np.median(steps))
    for k, step in enumerate(steps):
        if step <= max(1e-4, 1e-3 * abs(dz)):
            raise DataError(
                f"{folder}: slices {names[k]} and {names[k + 1]} lie at the same position "
                f"({along[k]:.4f} mm along the slice normal); expected one slice per position"
            )
    tolerance = max(1e-3, 1e-2 * dz)
    for k, step in enumerate(steps):
        if abs(step - dz) > tolerance:
            raise DataError(
                f"{folder}: non-uniform slice spacing: {step:.4g} mm between {names[k]} "
                f"({along[k]:.4g} mm) and {names[k + 1]} ({along[k + 1]:.4g} mm); expected "
                f"{dz:.4g} mm (median) everywhere — a slice may be missing"
            )
    drift = float(np.max(np.linalg.norm(in_plane, axis=1)))
    if drift > max(1e-2, 1e-2 * dz):
        raise DataError(
            f"{folder}: ImagePositionPatient moves in-plane by up to {drift:.4g} mm per slice "
            "(gantry tilt or shear); expected slice positions along the slice normal"
        )
    return dz


def read_dicom_series(folder: str | os.PathLike) -> CTVolume:
    """Read one DICOM series folder into HU ``(Z, H, W)``.

    Slices are sorted by ImagePositionPatient projected on the slice normal (never by file name or
    InstanceNumber); HU = pixel * RescaleSlope + RescaleIntercept per slice. The folder must hold
    one series whose slices share size, pixel spacing and orientation, with uniform spacing along
    the normal. Files with documentation suffixes (``.json``, ``.txt``, ...) are ignored; any other
    file that is not a DICOM image is skipped with a :class:`DataWarning`.
    """
    folder = Path(folder)
    headers, skipped = _scan_folder(folder)
    ref_iop, ref_ps, positions_arr = _check_slices(headers)
    ref = headers[0][1]
    ref_size = (int(ref.Rows), int(ref.Columns))
    row_dir, col_dir = ref_iop[:3], ref_iop[3:]
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    along = positions_arr @ normal
    order = np.argsort(along, kind="stable")
    headers = [headers[i] for i in order]
    positions_arr, along = positions_arr[order], along[order]
    names = [path.name for path, _ in headers]
    in_plane = np.diff(positions_arr, axis=0) - np.outer(np.diff(along), normal)
    dz = _check_spacing_along(folder, names, along, in_plane)

    hu = np.empty((len(headers), *ref_size), dtype=np.float32)
    integral = True
    for k, (path, _) in enumerate(headers):
        hu[k], slice_integral = _dicom_slice_hu(path, ref_size)
        integral = integral and slice_integral
    if integral and hu.min() >= np.iinfo(np.int16).min and hu.max() <= np.iinfo(np.int16).max:
        hu = hu.astype(np.int16)

    spacing = (dz, float(ref_ps[0]), float(ref_ps[1]))
    directions = np.stack([normal, col_dir, row_dir])
    hu, spacing, orientation = _to_lps_axes(hu, directions, spacing, positions_arr[0], folder)

    def text(keyword: str) -> str:
        value = ref.get(keyword)
        return "" if value is None else str(value)

    meta: dict[str, Any] = {
        "format": "dicom",
        "path": str(folder),
        "files": names,
        "series_instance_uid": text("SeriesInstanceUID"),
        "study_instance_uid": text("StudyInstanceUID"),
        "modality": text("Modality"),
        "series_description": text("SeriesDescription"),
        "manufacturer": text("Manufacturer"),
        "scanner": text("ManufacturerModelName"),
        "kvp": text("KVP"),
        "kernel": text("ConvolutionKernel"),
        "slice_thickness_mm": text("SliceThickness"),
        "patient_position": text("PatientPosition"),
        "image_orientation_patient": ref_iop.tolist(),
        "slice_positions_mm": along.tolist(),
        "instance_numbers": [int(ds.get("InstanceNumber", -1) or -1) for _, ds in headers],
        "skipped_files": skipped,
        **orientation,
    }
    return CTVolume(hu=hu, spacing_mm=spacing, meta=meta)


def _dicom_slice_hu(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """HU of one slice (float32) and whether slope/intercept are integers."""
    import pydicom

    ds = pydicom.dcmread(path, force=True)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder errors come in many types
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{path}: cannot decode pixel data (transfer syntax {syntax}: {message}); expected "
            "uncompressed pixels or an installed decoder (pylibjpeg / gdcm)"
        ) from exc
    if pixels.shape != size:
        raise DataError(
            f"{path}: pixel array shape {pixels.shape}; expected {size} from Rows/Columns"
        )
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    hu = pixels.astype(np.float64) * slope + intercept
    return hu.astype(np.float32), slope.is_integer() and intercept.is_integer()


def write_dicom_series(
    folder: str | os.PathLike,
    hu: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    series_description: str = "ctblend export",
    patient_name: str = "ctblend^export",
    origin_lps_mm: Sequence[float] = (0.0, 0.0, 0.0),
) -> Path:
    """Export HU ``(Z, H, W)`` as a CT Image Storage series (one file per slice) that viewers open.

    Values are rounded and stored as int16 with slope 1, intercept 0 (range [-32768, 32767]).
    The series is written into a temporary folder beside ``folder`` and renamed; ``folder`` must
    not exist or be empty.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    hu = np.asarray(hu)
    _require_3d(hu.shape, folder, "volume")
    dz, dy, dx = _check_spacing(spacing_mm, folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"{folder}: already exists and is not an empty folder; expected a new path")
    values = np.rint(np.asarray(hu, dtype=np.float64))
    values = np.clip(values, -32768, 32767).astype(np.int16)
    origin = np.asarray(origin_lps_mm, dtype=np.float64)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        for k, image in enumerate(values):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            ds.Modality = "CT"
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.PatientName = patient_name
            ds.PatientID = "ctblend"
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.StudyID = "1"
            ds.SeriesNumber = 1
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = k + 1
            ds.SeriesDescription = series_description
            ds.Manufacturer = "ctblend"
            ds.PositionReferenceIndicator = ""
            ds.KVP = ""
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [
                float(origin[0]),
                float(origin[1]),
                float(origin[2] + k * dz),
            ]
            ds.SliceLocation = float(origin[2] + k * dz)
            ds.SliceThickness = dz
            ds.SpacingBetweenSlices = dz
            ds.PixelSpacing = [dy, dx]
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = image.shape
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = 0
            ds.RescaleSlope = 1
            ds.RescaleType = "HU"
            ds.WindowCenter = 40
            ds.WindowWidth = 400
            ds.PixelData = np.ascontiguousarray(image).astype("<i2").tobytes()
            ds.save_as(tmp / f"{k + 1:04d}.dcm", enforce_file_format=True)
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# ---------------------------------------------------------------------------------------------
# HDF5
# ---------------------------------------------------------------------------------------------


def _open_hdf5(path: Path, chunk_cache_bytes: int | None = None) -> h5py.File:
    try:
        return h5py.File(path, "r", rdcc_nbytes=chunk_cache_bytes)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found; expected an HDF5 file") from exc
    except OSError as exc:
        message = str(exc).splitlines()[0]
        raise DataError(
            f"{path}: cannot open as HDF5 ({message}); expected a complete HDF5 file "
            "(is it truncated or not HDF5?)"
        ) from exc


def open_hdf5_volume(
    path: str | os.PathLike, dataset: str = "hu", chunk_cache_bytes: int | None = None
) -> h5py.Dataset:
    """Open ``path`` and return its validated 3-D ``dataset`` without reading it (lazy access).

    ``chunk_cache_bytes``: HDF5 chunk cache per open file (None: h5py's default, 1 MiB); 0 suits
    one-chunk-per-slice files read slice by slice. The caller closes ``dset.file`` when done.
    """
    path = Path(path)
    f = _open_hdf5(path, chunk_cache_bytes)
    try:
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            found = sorted(f.keys())
            raise DataError(
                f"{path}: no dataset '{dataset}' (found {found}); expected the CT volume in a "
                f"dataset named '{dataset}' with shape (Z, H, W)"
            )
        dset = f[dataset]
        _require_3d(dset.shape, path, f"dataset '{dataset}'")
        if dset.dtype.kind not in "iuf":
            raise DataError(f"{path}: dataset '{dataset}' has dtype {dset.dtype}; expected numbers")
        return dset
    except BaseException:
        f.close()
        raise


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_hdf5(
    path: str | os.PathLike, spacing_mm: Sequence[float] | None = None, dataset: str = "hu"
) -> CTVolume:
    """Read ``dataset`` (default ``hu``, ``(Z, H, W)``) and the file attributes into a CTVolume.

    Spacing comes from the ``spacing_mm`` attribute (``[dz, dy, dx]``); the ``spacing_mm`` argument
    is needed only when the file has none, and must agree with it otherwise. ``meta`` holds the
    other attributes (JSON-encoded ones decoded) plus ``format`` and ``path``.
    """
    path = Path(path)
    dset = open_hdf5_volume(path, dataset)
    f = dset.file
    try:
        try:
            hu = dset[...]
            attrs = {key: _decode_attr(f.attrs[key]) for key in f.attrs}
        except OSError as exc:
            message = str(exc).splitlines()[0]
            raise DataError(
                f"{path}: cannot read dataset '{dataset}' ({message}); expected a complete HDF5 "
                "file (is it truncated?)"
            ) from exc
    finally:
        f.close()
    json_keys = attrs.pop("json_attrs", None)
    for key in json.loads(json_keys) if json_keys else []:
        attrs[key] = json.loads(attrs[key])
    file_spacing = attrs.pop("spacing_mm", None)
    spacing = _resolve_spacing(path, file_spacing, spacing_mm)
    meta = {**attrs, "format": "hdf5", "path": str(path)}
    return CTVolume(hu=_volume_dtype(hu, path), spacing_mm=spacing, meta=meta)


def _resolve_spacing(path: Path, from_file: Any, given: Sequence[float] | None) -> tuple:
    if from_file is None:
        if given is None:
            raise DataError(
                f"{path}: no voxel spacing in the file; expected spacing_mm=(dz, dy, dx) "
                "from the caller"
            )
        return _check_spacing(given, path)
    file_spacing = _check_spacing(from_file, path)
    if given is not None and not np.allclose(_check_spacing(given, path), file_spacing, rtol=1e-6):
        raise DataError(
            f"{path}: spacing_mm={tuple(given)} given but the file says {file_spacing}; "
            "expected them to agree (or pass spacing_mm=None)"
        )
    return file_spacing


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("ctblend", "numpy", "h5py", "torch", "scipy", "pydicom"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def write_hdf5(
    path: str | os.PathLike,
    array: Any,
    *,
    spacing_mm: Sequence[float] | None = None,
    attrs: Mapping[str, Any] | None = None,
    dataset: str = "hu",
    compression_level: int = 4,
) -> Path:
    """Write ``array`` (numpy or torch; e.g. a volume ``(Z, H, W)`` or sinogram) atomically.

    The layout matches ``../shared/data/ct``: ``dataset`` chunked one 2-D slice per chunk, gzip +
    shuffle, file attributes ``spacing_mm`` (float64 ``[dz, dy, dx]``) and ``attrs``. Strings,
    numbers, booleans and numpy arrays are stored natively; dicts, lists, tuples and None as JSON
    (read back as dicts/lists). A ``versions`` attribute is added unless given. The file is written
    to a temporary file beside ``path`` and renamed, so ``path`` is complete or untouched.
    """
    path = Path(path)
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.size == 0 or array.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: array has shape {array.shape} and dtype {array.dtype}; "
            "expected a non-empty numeric array"
        )
    attrs = dict(attrs or {})
    for key in RESERVED_ATTRS:
        if key in attrs:
            raise DataError(
                f"{path}: attribute '{key}' is reserved; expected it out of attrs "
                "(pass spacing with spacing_mm=...)"
            )
    attrs.setdefault("versions", _versions())
    chunks = (1,) * (array.ndim - 2) + array.shape[-2:] if array.ndim >= 2 else True

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    try:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.create_dataset(
                dataset,
                data=array,
                chunks=chunks,
                compression="gzip",
                compression_opts=compression_level,
                shuffle=True,
                track_times=False,
            )
            if spacing_mm is not None:
                f.attrs["spacing_mm"] = np.asarray(_check_spacing(spacing_mm, path), np.float64)
            json_keys = []
            for key, value in attrs.items():
                kind = type(value).__name__
                try:
                    if isinstance(value, (dict, list, tuple)) or value is None:
                        value = json.dumps(value, default=_json_default)
                        json_keys.append(key)
                    elif isinstance(value, os.PathLike):
                        value = os.fspath(value)
                    f.attrs[key] = value
                except (TypeError, ValueError, OSError) as exc:
                    raise DataError(
                        f"{path}: attribute '{key}' ({kind}) cannot be stored "
                        f"({str(exc).splitlines()[0]}); expected a string, number, numeric array "
                        "or JSON-serialisable dict/list"
                    ) from exc
            if json_keys:
                f.attrs["json_attrs"] = json.dumps(json_keys)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_volume(path: str | os.PathLike, volume: CTVolume, **attrs: Any) -> Path:
    """Write a CTVolume as ctblend HDF5 (``hu`` + spacing + its meta + ``attrs``), atomically.

    The reader's provenance keys ``format``/``path`` are kept as ``converted_from_*``.
    """
    meta = dict(volume.meta)
    for key in ("format", "path"):
        if key in meta:
            meta[f"converted_from_{key}"] = meta.pop(key)
    meta.update(attrs)
    return write_hdf5(path, volume.hu, spacing_mm=volume.spacing_mm, attrs=meta)


# ---------------------------------------------------------------------------------------------
# NIfTI and NumPy
# ---------------------------------------------------------------------------------------------


def read_nifti(path: str | os.PathLike) -> CTVolume:
    """Read a NIfTI volume (needs ``nibabel``: ``pip install ctblend[nifti]``).

    The affine (RAS+) is turned into the LPS (z, y, x) convention by axis permutation and flips.
    Voxel values with a scaling (``scl_slope``/``scl_inter``) are returned as float32.
    """
    path = Path(path)
    try:
        import nibabel
    except ImportError as exc:
        raise DataError(
            f"{path}: reading NIfTI needs nibabel, which is not installed; expected "
            "`pip install ctblend[nifti]`"
        ) from exc
    try:
        img = nibabel.load(path)
        proxy = img.dataobj
        slope = getattr(proxy, "slope", 1.0)
        inter = getattr(proxy, "inter", 0.0)
        if slope in (1.0, None) and inter in (0.0, None):
            data = np.asarray(proxy)
        else:
            data = img.get_fdata(dtype=np.float32)
    except (OSError, EOFError, nibabel.filebasedimages.ImageFileError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{path}: cannot read NIfTI ({message}); expected a complete .nii/.nii.gz"
        ) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    _require_3d(data.shape, path, "NIfTI image")
    affine = np.asarray(img.affine, dtype=np.float64)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    columns = ras_to_lps @ affine[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise DataError(
            f"{path}: affine has a zero-length axis ({affine.tolist()}); expected voxel sizes > 0"
        )
    directions = (columns / spacing).T
    origin = ras_to_lps @ affine[:3, 3]
    hu, spacing_zyx, orientation = _to_lps_axes(
        _volume_dtype(data, path), directions, spacing.tolist(), origin, path
    )
    meta = {"format": "nifti", "path": str(path), **orientation}
    return CTVolume(hu=hu, spacing_mm=spacing_zyx, meta=meta)


def read_numpy(path: str | os.PathLike, spacing_mm: Sequence[float] | None = None) -> CTVolume:
    """Read HU ``(Z, H, W)`` from ``.npy`` or ``.npz`` (already in the ctblend axis convention).

    ``.npz``: array ``hu`` (or the only array); spacing from ``spacing_mm`` in the file or caller.
    Pickled objects are never loaded.
    """
    path = Path(path)
    file_spacing = None
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            array = loaded
        else:
            with loaded:
                names = [name for name in loaded.files if name != "spacing_mm"]
                name = "hu" if "hu" in names else (names[0] if len(names) == 1 else None)
                if name is None:
                    raise DataError(
                        f"{path}: arrays {loaded.files}; expected one named 'hu' (or one array)"
                    )
                array = loaded[name]
                if "spacing_mm" in loaded.files:
                    file_spacing = loaded["spacing_mm"]
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found; expected a .npy/.npz volume") from exc
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{path}: cannot read as NumPy ({message}); expected a numeric array saved with np.save"
        ) from exc
    _require_3d(array.shape, path)
    spacing = _resolve_spacing(path, file_spacing, spacing_mm)
    return CTVolume(
        hu=_volume_dtype(np.asarray(array), path),
        spacing_mm=spacing,
        meta={"format": "numpy", "path": str(path)},
    )


def read_volume(path: str | os.PathLike, spacing_mm: Sequence[float] | None = None) -> CTVolume:
    """Read a CT volume in HU from whatever ``path`` is.

    A folder: one DICOM series; ``.h5``/``.hdf5``/``.hdf``: ctblend/``../shared/data/ct`` HDF5;
    ``.nii``/``.nii.gz``: NIfTI; ``.npy``/``.npz``: NumPy with ``spacing_mm=(dz, dy, dx)`` from the
    caller. Returns ``(Z, H, W)`` in the module's axis convention.
    """
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise DataError(f"{path}: not found; expected a DICOM folder or a volume file")
    if path.is_dir():
        volume = read_dicom_series(path)
        return CTVolume(
            volume.hu, _resolve_spacing(path, volume.spacing_mm, spacing_mm), volume.meta
        )
    if name.endswith(HDF5_SUFFIXES):
        return read_hdf5(path, spacing_mm=spacing_mm)
    if name.endswith(NIFTI_SUFFIXES):
        volume = read_nifti(path)
        return CTVolume(
            volume.hu, _resolve_spacing(path, volume.spacing_mm, spacing_mm), volume.meta
        )
    if name.endswith(NUMPY_SUFFIXES):
        return read_numpy(path, spacing_mm=spacing_mm)
    if name.endswith(".dcm"):
        raise DataError(
            f"{path}: a single DICOM file; expected the folder holding the whole series"
        )
    raise DataError(
        f"{path}: unknown file type '{path.suffix}'; expected a DICOM folder, "
        ".h5/.hdf5, .nii/.nii.gz or .npy/.npz"
    )
