"""One cell = one JSON file: keys, table columns, atomic writes, cached-cell checks."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctblend.io import open_hdf5_volume
from ctblend.metrics import PLANES

METRIC_COLUMNS = tuple(
    f"{plane}_{metric}{suffix}"
    for plane in PLANES
    for metric in ("psnr", "ssim", "psnr_body", "ssim_body")
    for suffix in ("", "_std")
) + ("volume_psnr", "tv_z", "tv_z_truth", "std_body", "std_error_spearman", "within_2std")
COLUMNS = (
    ("volume", "protocol", "method", "ablation", "seed", "status")
    + METRIC_COLUMNS
    + ("seconds", "nfe", "peak_mem_mb", "gpu_peak_mb")
    + ("shape", "scale", "voxel_mm", "prior", "config", "machine", "finished_at")
)


@dataclass(frozen=True)
class Cell:
    volume: str
    protocol: str
    method: str
    ablation: str
    seed: int

    @property
    def key(self) -> str:
        return cell_key(self.volume, self.protocol, self.method, self.ablation, self.seed)


def cell_key(volume: str, protocol: str, method: str, ablation: str, seed: int) -> str:
    raw = f"{volume}__{protocol}__{method}__{ablation}__seed{seed}"
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", raw)


def json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (np.generic,)):
        return json_safe(value.item())
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return json_safe(value.item())
    return str(value)


def blank_row(**values) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(values)
    return row


def load_cell(path: Path, fingerprint: dict) -> dict | None:
    """The stored row of a finished cell, or None; settings that differ are an error."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        stored, row = data["fingerprint"], data["row"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable cell file ({exc}); delete it to recompute") from exc
    if stored != json_safe(fingerprint):
        differ = sorted(
            k
            for k in set(stored) | set(fingerprint)
            if stored.get(k) != json_safe(fingerprint.get(k))
        )
        raise ValueError(
            f"{path}: this cell was computed with other settings ({', '.join(differ)} differ); "
            "use another --out folder or delete the cell to recompute"
        )
    return row


def reconstruction_path(out: Path, cell: Cell) -> Path:
    """Where a run in ``out`` stores the float16 reconstruction of ``cell``."""
    return out / "volumes" / f"{cell.key}.h5"


def read_reconstruction(out: Path, cell: Cell) -> np.ndarray | None:
    """The stored reconstruction of ``cell`` as float32 ``(Z, H, W)``, or None if not stored."""
    path = reconstruction_path(out, cell)
    if not path.is_file():
        return None
    dset = open_hdf5_volume(path, "recon")
    try:
        return dset[...].astype(np.float32)
    finally:
        dset.file.close()


def read_reconstructions(out: Path, cell: Cell, methods) -> dict[str, np.ndarray]:
    """The stored reconstructions of ``cell`` under each of ``methods`` that has one, by method."""
    found = {}
    for method in methods:
        recon = read_reconstruction(out, replace(cell, method=method))
        if recon is not None:
            found[method] = recon
    return found
