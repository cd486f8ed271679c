"""HDF5 volumes: the ``hu`` dataset with spacing and provenance attributes; atomic writes."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ctblend.io.output import atomic_path
from ctblend.io.volume import (
    RESERVED_ATTRS,
    CTVolume,
    DataError,
    check_spacing,
    require_3d,
    volume_dtype,
)


def open_hdf5(path: Path, chunk_cache_bytes: int | None = None) -> h5py.File:
    """``path`` opened read-only; a one-line DataError says why when it cannot be (missing,
    not HDF5, truncated)."""
    try:
        return h5py.File(path, "r", rdcc_nbytes=chunk_cache_bytes)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found; expected an HDF5 file") from exc
    except OSError as exc:
        raise DataError(
            f"{path}: {_why_unreadable(path, exc)}; expected a complete HDF5 file"
        ) from exc


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _why_unreadable(path: Path, exc: OSError) -> str:
    """Why h5py cannot open ``path``: not HDF5 at all, truncated, or h5py's own reason."""
    size = path.stat().st_size
    with open(path, "rb") as fh:  # the signature sits at 0, 512, 1024, 2048, … (user block)
        offsets = [0] + [512 << k for k in range(max(0, size.bit_length() - 9))]
        found = False
        for offset in offsets:
            fh.seek(offset)
            if fh.read(8) == HDF5_SIGNATURE:
                found = True
                break
    if not found:
        return f"not an HDF5 file (no HDF5 signature in its {size} bytes)"
    message = str(exc).splitlines()[0]
    if "truncated" in message or "eof" in message.lower():
        return f"truncated HDF5 file ({size} bytes; h5py: {message})"
    return f"cannot open as HDF5 ({message})"


def open_hdf5_volume(
    path: str | os.PathLike, dataset: str = "hu", chunk_cache_bytes: int | None = None
) -> h5py.Dataset:
    """Open ``path`` and return its validated 3-D ``dataset`` without reading it (lazy access).

    ``chunk_cache_bytes``: HDF5 chunk cache per open file (None: h5py's default, 1 MiB); 0 suits
    one-chunk-per-slice files read slice by slice. The caller closes ``dset.file`` when done.
    """
    path = Path(path)
    f = open_hdf5(path, chunk_cache_bytes)
    try:
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            found = sorted(f.keys())
            raise DataError(
                f"{path}: no dataset '{dataset}' (found {found}); expected the CT volume in a "
                f"dataset named '{dataset}' with shape (Z, H, W)"
            )
        dset = f[dataset]
        require_3d(dset.shape, path, f"dataset '{dataset}'")
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
    spacing = resolve_spacing(path, file_spacing, spacing_mm)
    meta = {**attrs, "format": "hdf5", "path": str(path)}
    return CTVolume(hu=volume_dtype(hu, path), spacing_mm=spacing, meta=meta)


def resolve_spacing(path: Path, from_file: Any, given: Sequence[float] | None) -> tuple:
    if from_file is None:
        if given is None:
            raise DataError(
                f"{path}: no voxel spacing in the file; expected spacing_mm=(dz, dy, dx) "
                "from the caller (--spacing DZ,DY,DX on the command line)"
            )
        return check_spacing(given, path)
    file_spacing = check_spacing(from_file, path)
    if given is not None and not np.allclose(check_spacing(given, path), file_spacing, rtol=1e-6):
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

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            add_dataset(f, dataset, array, compression_level)
            if spacing_mm is not None:
                f.attrs["spacing_mm"] = np.asarray(check_spacing(spacing_mm, path), np.float64)
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
    return path


def add_dataset(f: h5py.Group, name: str, array: Any, compression_level: int = 4) -> None:
    """Dataset ``name`` (``"a/b"`` makes group ``a``) of ``array`` (numpy or torch) in ctblend's
    layout: chunks of one 2D slice, gzip with byte shuffle, no time stamps."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    chunks = (1,) * (array.ndim - 2) + array.shape[-2:] if array.ndim >= 2 else True
    f.create_dataset(
        name,
        data=array,
        chunks=chunks,
        compression="gzip",
        compression_opts=compression_level,
        shuffle=True,
        track_times=False,
    )


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
