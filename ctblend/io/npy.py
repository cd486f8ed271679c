"""NumPy ``.npy`` / ``.npz`` volumes (no pickles)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ctblend.io.hdf5 import resolve_spacing
from ctblend.io.volume import CTVolume, DataError, require_3d, volume_dtype


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
    require_3d(array.shape, path)
    spacing = resolve_spacing(path, file_spacing, spacing_mm)
    return CTVolume(
        hu=volume_dtype(np.asarray(array), path),
        spacing_mm=spacing,
        meta={"format": "numpy", "path": str(path)},
    )
