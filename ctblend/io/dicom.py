"""DICOM series: read a folder of CT slices (any order, any axis-aligned orientation), write one."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctblend.io.output import atomic_path
from ctblend.io.volume import (
    DOC_SUFFIXES,
    CTVolume,
    DataError,
    DataWarning,
    check_spacing,
    require_3d,
    to_lps_axes,
)


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
    hu, spacing, orientation = to_lps_axes(hu, directions, spacing, positions_arr[0], folder)

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


def _check_complete(path: Path, ds, size: tuple[int, int]) -> None:
    """A one-line DataError saying "truncated" when the file ends before its pixel data does."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in ds:
        raise DataError(
            f"{path}: no pixel data ({path.stat().st_size} bytes; the file may be truncated); "
            "expected a complete DICOM image file"
        )
    if syntax is None or syntax.is_compressed:
        return
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    expected = size[0] * size[1] * samples * int(ds.get("BitsAllocated", 16) or 16) // 8
    found = len(ds.PixelData)
    if found < expected:
        raise DataError(
            f"{path}: truncated file ({path.stat().st_size} bytes): its pixel data has {found} "
            f"of the {expected} bytes of a {size[0]}×{size[1]} image; expected a complete file"
        )


def _dicom_slice_hu(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """HU of one slice (float32) and whether slope/intercept are integers."""
    import pydicom

    ds = pydicom.dcmread(path, force=True)
    _check_complete(path, ds, size)
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


def dicom_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable DICOM image (not DICOM, truncated, undecodable pixels), or
    None when it is one."""
    ds = _read_dicom_header(path)
    if ds is None:
        return f"not a DICOM image, {path.stat().st_size} bytes"
    try:
        _dicom_slice_hu(path, (int(ds.Rows), int(ds.get("Columns", 0) or 0)))
    except DataError as exc:
        return str(exc).removeprefix(f"{path}: ")
    return None


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
    require_3d(hu.shape, folder, "volume")
    dz, dy, dx = check_spacing(spacing_mm, folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"{folder}: already exists and is not an empty folder; expected a new path")
    values = np.rint(np.asarray(hu, dtype=np.float64))
    values = np.clip(values, -32768, 32767).astype(np.int16)
    origin = np.asarray(origin_lps_mm, dtype=np.float64)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()

    with atomic_path(folder, folder=True) as tmp:
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
    return folder
