"""``ctblend bench``: volumes × protocols × methods (× ablations) tables, resumable.

Implements ``../shared/reference/protocol.md``: each volume (HDF5 / DICOM folder / NIfTI / npy, a
MANIFEST role ``test`` / ``ood`` / ``train`` of ``--ct-dir``, or the procedural ``phantom[:Z]``) is
scaled to protocol units x = (clip(HU) + 1024) / 4095, brought in-plane to the scale (``cpu128``:
2×2 mean of 256², ``paper256``, or an int size; z never resampled), measured under each protocol
(``svct8/6/4``, ``lact90``, optionally ``+noise``; or a 2D geometry from ``--geometry``),
reconstructed by each method, clipped to [0, 1] and scored (per-plane PSNR/SSIM mean ± std, volume
PSNR, TV-z of recon and truth) with wall time, NFE and peak memory.

Every (volume, protocol, method, ablation, seed) cell is written to ``out/cells/<key>.json`` as soon
as it finishes and skipped when present (a cell computed under other settings is an error, not
silently reused). Methods whose prior is missing give a row ``skipped: no prior (…)`` that is not
cached, so a later run with the prior fills it in. Outputs: ``results.md``, ``results.csv``,
``results.json``, ``panels/*.png`` (axial/coronal/sagittal, via ``ctblend.figures.plot_panels``),
``volumes/*.h5`` (float16 reconstructions for the panels) and ``bench.yaml`` (the settings).

Peak memory is the increase of the process's resident set size (RSS) over its value at the start
of the reconstruction, after garbage collection and glibc ``malloc_trim`` (so memory freed by
earlier cells is not silently reused), sampled every 5 ms from ``/proc/self/statm`` (elsewhere:
the increase of ``resource.getrusage`` ru_maxrss); on CUDA also ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import ctypes.util
import dataclasses
import gc
import io
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import operators as ops
from ctblend.data.phantom import ct_phantom, phantom_spacing_mm
from ctblend.data.scaling import SCALES, hu_to_unit, scale_size, to_scale
from ctblend.data.splits import ROLES, manifest_split
from ctblend.geometry_config import Acquisition, geometry_from_yaml
from ctblend.io import open_hdf5_volume, read_volume, write_hdf5
from ctblend.methods import PRIOR_OF_METHOD, reconstruct
from ctblend.metrics import PLANES, volume_scores
from ctblend.priors.loading import CheckpointError, load_prior, read_spec
from ctblend.protocol import get_protocol
from ctblend.runtime import describe_machine, machine_info, resolve_device
from ctblend.training.config import read_yaml_config

__all__ = [
    "ABLATIONS",
    "BENCH_METHODS",
    "COLUMNS",
    "BenchConfig",
    "add_arguments",
    "machine_info",
    "run",
    "run_bench",
]

log = logging.getLogger(__name__)

BENCH_METHODS = (
    "fbp",
    "fbp-unet",
    "sirt",
    "tv",
    "dds",
    "dds2d",
    "diffusionblend",
    "diffusionblend++",
)
BENCH_PROTOCOLS = ("svct8", "svct6", "svct4", "lact90")
DEFAULT_ABLATION = "default"
#: diffusionblend++ ablations (protocol.md) as overrides of the default cell (adjacency + cross,
#: cross every 2nd step, 200 NFE), which is the reference row of the ablation table.
ABLATIONS: dict[str, dict[str, Any]] = {
    "partition=fixed": {"partition": "fixed"},
    "partition=adjacency": {"partition": "adjacency"},
    "cross_every=4": {"cross_every": 4},
    "cross_every=8": {"cross_every": 8},
    "nfe=50": {"nfe": 50},
    "nfe=100": {"nfe": 100},
}
#: Prior folder base names under ``ctblend/weights`` (``<base>_<scale>``) per prior kind.
SHIPPED_PRIORS = {"blend++": "blendpp", "blend": "blend", "slice2d": "slice2d"}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
METRIC_COLUMNS = tuple(
    f"{plane}_{metric}{suffix}"
    for plane in PLANES
    for metric in ("psnr", "ssim")
    for suffix in ("", "_std")
) + ("volume_psnr", "tv_z", "tv_z_truth")
COLUMNS = (
    ("volume", "protocol", "method", "ablation", "seed", "status")
    + METRIC_COLUMNS
    + ("seconds", "nfe", "peak_mem_mb", "gpu_peak_mb")
    + ("shape", "scale", "voxel_mm", "prior", "config", "machine", "finished_at")
)
MEMORY_NOTE = (
    "peak_mem_mb: increase of the process's resident set size over its value at the start of the "
    "reconstruction (after garbage collection and glibc malloc_trim), sampled every 5 ms from "
    "/proc/self/statm (where /proc is missing: increase of resource.getrusage ru_maxrss); "
    "gpu_peak_mb: torch.cuda.max_memory_allocated (CUDA only)"
)
QUICK = {
    "volumes": ("phantom:18",),
    "protocols": ("svct8", "lact90"),
    "methods": ("fbp", "fbp-unet", "sirt", "tv", "diffusionblend++"),
    "scale": 32,
    "nfe": 4,
    "sirt_iterations": 30,
    "tv_iterations": 30,
}


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """Everything a benchmark run depends on.

    volumes: files / folders, MANIFEST roles (``test``, ``ood``, ``train``) or volume names of
    ``ct_dir``, or ``phantom[:Z]``. protocols: names (``svct8``, ``lact90+noise``, …), ignored
    when ``geometry`` (a YAML file) is given. ablations: names from ``ABLATIONS`` (diffusionblend++
    only). nfe: NFE of every diffusion method (None: 200, DDS 100). Priors: folders (None: the
    shipped ``ctblend/weights/<base>_<scale>`` when present). fbp_unet: a folder holding one
    FBP-UNet folder per protocol (None: ``ctblend/weights/fbpunet_<scale>_<protocol>``).
    spacing_mm: voxel spacing for files without one (``.npy``).
    """

    out_dir: str = "bench"
    volumes: tuple[str, ...] = ("test", "ood")
    ct_dir: str | None = None
    protocols: tuple[str, ...] = BENCH_PROTOCOLS
    methods: tuple[str, ...] = BENCH_METHODS
    ablations: tuple[str, ...] = ()
    scale: str | int = "cpu128"
    z_range: tuple[int, int] | None = None
    seeds: tuple[int, ...] = (0,)
    nfe: int | None = None
    sirt_iterations: int = 200
    tv_iterations: int = 300
    tv_lam: float = 0.01
    prior_blendpp: str | None = None
    prior_blend: str | None = None
    prior_slice2d: str | None = None
    fbp_unet: str | None = None
    geometry: str | None = None
    spacing_mm: tuple[float, float, float] | None = None
    device: str = "cpu"
    save_volumes: bool = True
    panels: bool = True

    def __post_init__(self) -> None:
        for name in ("volumes", "protocols", "methods", "ablations", "seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("z_range", "spacing_mm"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        scale_size(self.scale)
        if not self.volumes:
            raise ValueError("no volumes given")
        if not self.seeds:
            raise ValueError("no seeds given")
        unknown = [m for m in self.methods if m not in BENCH_METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; expected some of {list(BENCH_METHODS)}")
        unknown = [a for a in self.ablations if a not in ABLATIONS]
        if unknown:
            raise ValueError(f"unknown ablations {unknown}; expected some of {list(ABLATIONS)}")
        if self.geometry is None:
            for name in self.protocols:
                get_protocol(name)
        if self.z_range is not None and (
            len(self.z_range) != 2 or not 0 <= self.z_range[0] < self.z_range[1]
        ):
            raise ValueError(f"z_range {self.z_range}: expected START STOP with 0 <= START < STOP")
        if self.nfe is not None and self.nfe < 1:
            raise ValueError(f"nfe must be >= 1, got {self.nfe}")
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise ValueError(f"device {self.device!r}: expected cpu, cuda, cuda:N or auto")

    @property
    def size(self) -> int:
        return scale_size(self.scale)

    @property
    def scale_name(self) -> str:
        """``cpu128``, ``paper256`` or ``<N>px`` (used in shipped weight folder names)."""
        if isinstance(self.scale, str):
            return self.scale
        named = {size: name for name, size in SCALES.items()}
        return named.get(self.size, f"{self.size}px")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key, value in d.items():
            if isinstance(value, tuple):
                d[key] = list(value)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> BenchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown bench settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def to_yaml(self, path: str | Path) -> None:
        _atomic_write(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> BenchConfig:
        return read_yaml_config(cls, path, "bench settings")


# --- machine and memory -----------------------------------------------------------------------


def _rss_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so
    that memory freed by earlier cells is not silently reused and missed by the RSS delta."""
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak RSS increase during a ``with`` block (see ``MEMORY_NOTE``), in MiB."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        _release_free_memory()
        self._base = _rss_bytes()
        if self._base is None:
            import resource

            self._base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return self
        self._peak = self._base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def __exit__(self, *exc) -> None:
        if self._base is None:
            import resource

            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._base_max
            self.peak_mb = max(0, grown) / 1024.0  # Linux reports kB
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes() or 0)
        self.peak_mb = (self._peak - self._base) / 2**20


# --- volumes, protocols, priors ---------------------------------------------------------------


@dataclass(frozen=True)
class VolumeSource:
    """A volume to benchmark: ``path`` (None for the phantom) and its table name."""

    name: str
    path: Path | None = None
    phantom_slices: int = 0


def resolve_volumes(specs: tuple[str, ...], ct_dir: str | None) -> list[VolumeSource]:
    """Volume specs → sources (roles expand to the files of ``ct_dir``'s MANIFEST)."""
    out: list[VolumeSource] = []
    split = None
    for spec in specs:
        match = re.fullmatch(r"phantom(?::(\d+))?", spec)
        if match:
            out.append(VolumeSource("phantom", None, int(match[1] or 32)))
            continue
        path = Path(spec)
        if path.exists():
            out.append(VolumeSource(_volume_name(path), path))
            continue
        if ct_dir is None:
            raise ValueError(
                f"volume {spec!r}: no such file or folder (for a MANIFEST role or volume name, "
                f"pass --ct-dir; roles: {', '.join(ROLES)})"
            )
        if spec in ROLES:
            split = split or manifest_split(ct_dir)
            if not split[spec]:
                raise ValueError(f"{ct_dir}: the MANIFEST lists no {spec!r} volume")
            out += [VolumeSource(p.stem, p) for p in split[spec]]
            continue
        candidate = Path(ct_dir) / f"{spec}.h5"
        if not candidate.is_file():
            raise ValueError(
                f"volume {spec!r}: not a file, folder, role ({', '.join(ROLES)}) or "
                f"<name>.h5 in {ct_dir}"
            )
        out.append(VolumeSource(spec, candidate))
    names = [v.name for v in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"volumes named more than once: {duplicates}")
    return out


def _volume_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".h5", ".hdf5", ".hdf", ".npy", ".npz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_volume(
    source: VolumeSource, config: BenchConfig
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Ground truth ``(Z, S, S)`` float32 in [0, 1] at the scale, and its spacing (dz, dy, dx)
    in mm after the in-plane resizing."""
    size = config.size
    if source.path is None:
        shape = (source.phantom_slices, size, size)
        x, spacing = ct_phantom(shape, seed=0), phantom_spacing_mm(shape)
    else:
        vol = read_volume(source.path, spacing_mm=config.spacing_mm)
        x, (dz, dy, dx) = hu_to_unit(vol.hu), vol.spacing_mm
        spacing = (dz, dy * vol.hu.shape[1] / size, dx * vol.hu.shape[2] / size)
    if config.z_range is not None:
        start, stop = config.z_range
        if stop > x.shape[0]:
            raise ValueError(
                f"{source.name}: z_range {start}:{stop} beyond its {x.shape[0]} slices"
            )
        x = x[start:stop]
    return np.ascontiguousarray(to_scale(x, size), dtype=np.float32), tuple(map(float, spacing))


def _acquisitions(config: BenchConfig) -> list[tuple[str, Acquisition]]:
    """(table name, acquisition) per protocol, or the one geometry of ``config.geometry``
    (named after its file; schema: :mod:`ctblend.geometry_config`)."""
    if config.geometry is not None:
        geometry, noise = geometry_from_yaml(config.geometry)
        name = Path(config.geometry).stem + ("+noise" if noise else "")
        return [(name, Acquisition(geometry=geometry, noise=noise))]
    return [(get_protocol(p).name, Acquisition(protocol=p)) for p in config.protocols]


class _Priors:
    """Loads each prior once; a missing one is a skip reason, an explicit bad one an error."""

    def __init__(self, config: BenchConfig, device: torch.device):
        self.config, self.device = config, device
        self.cache: dict[tuple, Any] = {}
        explicit = {
            "blend++": config.prior_blendpp,
            "blend": config.prior_blend,
            "slice2d": config.prior_slice2d,
        }
        self.paths: dict[str, tuple[Path | None, bool]] = {}
        for kind, given in explicit.items():
            if given is not None:
                if not Path(given).exists():
                    raise ValueError(f"--prior for {kind!r}: {given} does not exist")
                self.paths[kind] = (Path(given), True)
            else:
                default = WEIGHTS_DIR / f"{SHIPPED_PRIORS[kind]}_{config.scale_name}"
                self.paths[kind] = (default if default.exists() else None, False)
        if config.fbp_unet is not None and not Path(config.fbp_unet).is_dir():
            raise ValueError(f"--fbp-unet: {config.fbp_unet} is not a folder")

    def get(self, method: str, protocol_name: str) -> tuple[Any, str, str | None]:
        """(prior or None, prior label, skip reason or None) for ``method`` under a protocol."""
        if method == "fbp-unet":
            return self._fbp_unet(protocol_name)
        if method not in PRIOR_OF_METHOD:
            return None, "", None
        kind = PRIOR_OF_METHOD[method]
        path, explicit = self.paths[kind]
        if path is None:
            return None, "", f"skipped: no prior (no {kind!r} prior given or shipped)"
        key = ("diffusion", kind)
        if key not in self.cache:
            try:
                prior = load_prior(path, kind=kind, image_size=self.config.size, device=self.device)
                steps = read_spec(path).steps
                self.cache[key] = (prior, f"{path.name} ({steps} steps)", None)
            except CheckpointError as exc:
                if explicit:
                    raise
                self.cache[key] = (None, path.name, f"skipped: no prior ({exc})")
        return self.cache[key]

    def _fbp_unet(self, protocol_name: str) -> tuple[Any, str, str | None]:
        from ctblend.baselines.fbp_unet import FBPUNet, read_fbp_unet_spec

        key = ("fbp-unet", protocol_name)
        if key in self.cache:
            return self.cache[key]
        size = self.config.size
        if self.config.fbp_unet is not None:
            candidates = sorted(p for p in Path(self.config.fbp_unet).iterdir() if p.is_dir())
        else:
            default = WEIGHTS_DIR / f"fbpunet_{self.config.scale_name}_{protocol_name}"
            candidates = [default] if default.is_dir() else []
        found = None
        for folder in candidates:
            try:
                _, spec = read_fbp_unet_spec(folder)
            except CheckpointError:
                continue
            if spec.protocol == protocol_name and spec.image_size == size:
                found = folder
                break
        if found is None:
            where = self.config.fbp_unet or WEIGHTS_DIR
            reason = f"skipped: no prior (no FBP-UNet for {protocol_name} at {size}² in {where})"
            self.cache[key] = (None, "", reason)
        else:
            net = FBPUNet.load(found, image_size=size, device=self.device)
            self.cache[key] = (net, f"{found.name} ({net.spec.steps} steps)", None)
        return self.cache[key]


# --- cells ------------------------------------------------------------------------------------


def _cell_key(volume: str, protocol: str, method: str, ablation: str, seed: int) -> str:
    raw = f"{volume}__{protocol}__{method}__{ablation}__seed{seed}"
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", raw)


def _method_config(method: str, ablation: str, seed: int, config: BenchConfig) -> dict:
    if method == "sirt":
        return {"iterations": config.sirt_iterations}
    if method == "tv":
        return {"lam": config.tv_lam, "iterations": config.tv_iterations}
    if method in PRIOR_OF_METHOD:
        cfg: dict[str, Any] = {"seed": seed}
        if config.nfe is not None:
            cfg["nfe"] = config.nfe
        cfg.update(ABLATIONS.get(ablation, {}))
        return cfg
    return {}


def _cells(config: BenchConfig) -> Iterator[tuple[str, str]]:
    """(method, ablation) pairs in table order."""
    for method in config.methods:
        yield method, DEFAULT_ABLATION
    for ablation in config.ablations:
        yield "diffusionblend++", ablation


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (np.generic,)):
        return _json_safe(value.item())
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _json_safe(value.item())
    return str(value)


def _blank_row(**values) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(values)
    return row


def _load_cell(path: Path, fingerprint: dict) -> dict | None:
    """The stored row of a finished cell, or None; settings that differ are an error."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        stored, row = data["fingerprint"], data["row"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable cell file ({exc}); delete it to recompute") from exc
    if stored != _json_safe(fingerprint):
        differ = sorted(
            k
            for k in set(stored) | set(fingerprint)
            if stored.get(k) != _json_safe(fingerprint.get(k))
        )
        raise ValueError(
            f"{path}: this cell was computed with other settings ({', '.join(differ)} differ); "
            "use another --out folder or delete the cell to recompute"
        )
    return row


# --- the run ----------------------------------------------------------------------------------


def run_bench(config: BenchConfig) -> list[dict]:
    """Run (or resume) every cell of ``config``; write the tables; return the rows."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    machine = machine_info(device)
    description = describe_machine(machine)
    acquisitions = _acquisitions(config)
    sources = resolve_volumes(config.volumes, config.ct_dir)
    priors = _Priors(config, device)
    config.to_yaml(out / "bench.yaml")
    rows: list[dict] = []
    volume_info: dict[str, dict] = {}
    notes: list[str] = []
    for source in sources:
        truth_np, spacing = load_volume(source, config)
        voxel_mm = spacing[1]
        truth = torch.from_numpy(truth_np).to(device)
        shape = tuple(truth.shape)
        volume_info[source.name] = {
            "shape": list(shape),
            "spacing_mm": [round(s, 4) for s in spacing],
            "path": str(source.path) if source.path else "procedural phantom (seed 0)",
        }
        for name, acquisition in acquisitions:
            A = acquisition.operator(shape)
            for seed in config.seeds:
                y = acquisition.simulate(A, truth, voxel_mm, seed=seed)
                for method, ablation in _cells(config):
                    cell = _Cell(source.name, name, method, ablation, seed)
                    rows.append(
                        _run_cell(
                            config, out, cell, A, y, truth, voxel_mm, priors, device, description
                        )
                    )
                panel = _Cell(source.name, name, "all", DEFAULT_ABLATION, seed)
                notes += _write_panel(config, out, panel, truth_np, spacing, rows)
        _write_tables(config, out, rows, machine, volume_info, notes)
    _write_tables(config, out, rows, machine, volume_info, notes)
    return rows


@dataclass(frozen=True)
class _Cell:
    volume: str
    protocol: str
    method: str
    ablation: str
    seed: int

    @property
    def key(self) -> str:
        return _cell_key(self.volume, self.protocol, self.method, self.ablation, self.seed)


def _run_cell(
    config: BenchConfig,
    out: Path,
    cell: _Cell,
    A: ops.Operator,
    y: torch.Tensor,
    truth: torch.Tensor,
    voxel_mm: float,
    priors: _Priors,
    device: torch.device,
    machine: str,
) -> dict:
    key, method, seed = cell.key, cell.method, cell.seed
    base = {
        **dataclasses.asdict(cell),
        "shape": "x".join(str(s) for s in truth.shape),
        "scale": config.scale_name,
        "voxel_mm": round(voxel_mm, 4),
    }
    prior, prior_label, skip = priors.get(method, cell.protocol)
    if skip is not None:
        log.info("%s: %s", key, skip)
        return _blank_row(**base, status=skip, machine=machine)
    method_config = _method_config(method, cell.ablation, seed, config)
    fingerprint = {
        "shape": list(truth.shape),
        "scale": config.scale_name,
        "z_range": config.z_range,
        "geometry": str(A.proj_geom),
        "config": method_config,
        "prior": prior_label,
    }
    cell_path = out / "cells" / f"{key}.json"
    cached = _load_cell(cell_path, fingerprint)
    if cached is not None:
        log.info("%s: done earlier, skipped", key)
        return cached
    log.info("%s: running", key)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        with PeakMemory() as memory:
            x, record = reconstruct(method, y, A, prior, **method_config)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    except (ValueError, RuntimeError) as exc:
        log.exception("%s failed", key)
        status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return _blank_row(**base, status=status, machine=machine)
    x = x.clamp(0.0, 1.0)
    scores = volume_scores(x, truth)
    row = _blank_row(
        **base,
        **scores,
        status="done",
        seconds=round(seconds, 3),
        nfe=int(record.get("nfe") or 0),
        peak_mem_mb=round(memory.peak_mb, 1),
        gpu_peak_mb=(
            round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            if device.type == "cuda"
            else None
        ),
        prior=prior_label or None,
        config=_json_safe(record.get("config", method_config)),
        machine=machine,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if config.save_volumes:
        write_hdf5(
            out / "volumes" / f"{key}.h5",
            x.to("cpu", torch.float16),
            dataset="recon",
            attrs={"cell": key, "units": "protocol units [0, 1], clipped"},
        )
    record_json = {k: v for k, v in record.items() if k != "config"}
    stored = {"row": row, "fingerprint": fingerprint, "record": record_json}
    _atomic_write(cell_path, json.dumps(_json_safe(stored), indent=1) + "\n")
    return _json_safe(row)


# --- panels and tables ------------------------------------------------------------------------


def _write_panel(
    config: BenchConfig,
    out: Path,
    panel: _Cell,
    truth: np.ndarray,
    spacing: tuple[float, float, float],
    rows: list[dict],
) -> list[str]:
    """Axial/coronal/sagittal panels of the ground truth and every finished default cell of
    (volume, protocol, seed) with a stored reconstruction; returns notes for the report."""
    if not config.panels:
        return []
    try:
        from ctblend.figures import plot_panels
    except ImportError:
        return ["panels not drawn: ctblend.figures.plot_panels is not available (re-run to draw)"]
    volumes = {"ground truth": truth}
    for row in rows:
        same = (row["volume"], row["protocol"], row["seed"]) == (
            panel.volume,
            panel.protocol,
            panel.seed,
        )
        if not same or row["ablation"] != DEFAULT_ABLATION or row["status"] != "done":
            continue
        cell = dataclasses.replace(panel, method=row["method"])
        path = out / "volumes" / f"{cell.key}.h5"
        if path.is_file():
            dset = open_hdf5_volume(path, "recon")
            try:
                volumes[row["method"]] = dset[...].astype(np.float32)
            finally:
                dset.file.close()
    if len(volumes) < 2:
        return []
    title = f"{panel.volume}, {panel.protocol}, seed {panel.seed}"
    target = out / "panels" / f"{panel.key}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    plot_panels(
        volumes, target, truth_key="ground truth", window=(0, 1), spacing=spacing, title=title
    )
    return []


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def _pm(row: dict, key: str, digits: int) -> str:
    if row.get(key) is None:
        return "–"
    return f"{_fmt(row[key], digits)} ± {_fmt(row[f'{key}_std'], digits)}"


_MD_HEADER = (
    "| protocol | method | ablation | seed | axial PSNR | axial SSIM | coronal PSNR | coronal SSIM "
    "| sagittal PSNR | sagittal SSIM | volume PSNR | TV-z (truth) | time s | NFE | peak MB "
    "| GPU MB | status |"
)


def _md_row(row: dict) -> str:
    tvz = "–" if row.get("tv_z") is None else f"{row['tv_z']:.4f} ({row['tv_z_truth']:.4f})"
    cells = [
        row["protocol"],
        row["method"],
        row["ablation"],
        str(row["seed"]),
        *(
            _pm(row, f"{plane}_{metric}", 2 if metric == "psnr" else 3)
            for plane in PLANES
            for metric in ("psnr", "ssim")
        ),
        _fmt(row.get("volume_psnr"), 2),
        tvz,
        _fmt(row.get("seconds"), 1),
        _fmt(row.get("nfe"), 0) if row.get("nfe") is not None else "–",
        _fmt(row.get("peak_mem_mb"), 0),
        _fmt(row.get("gpu_peak_mb"), 0),
        row["status"],
    ]
    return "| " + " | ".join(cells) + " |"


def _markdown(
    config: BenchConfig, rows: list[dict], machine: dict, volume_info: dict, notes: list[str]
) -> str:
    done = sum(r["status"] == "done" for r in rows)
    skipped = sum(str(r["status"]).startswith("skipped") for r in rows)
    failed = sum(str(r["status"]).startswith("failed") for r in rows)
    lines = [
        "# ctblend bench results",
        "",
        f"- machine: {describe_machine(machine)}",
        f"- scale: {config.scale_name} ({config.size}²), z never resampled"
        + (f", slices {config.z_range[0]}:{config.z_range[1]}" if config.z_range else ""),
        f"- seeds: {', '.join(map(str, config.seeds))} (measurement noise and diffusion sampling)",
        f"- cells: {done} done, {skipped} skipped, {failed} failed",
        "- PSNR/SSIM: scikit-image, data range 1, per 2D slice, mean ± std over the slices of each "
        "plane; reconstructions clipped to [0, 1]",
        "- TV-z: mean |x[z+1] − x[z]| of the reconstruction (of the ground truth in brackets)",
        f"- time: wall-clock seconds of the reconstruction; {MEMORY_NOTE}",
    ]
    lines += [f"- note: {n}" for n in dict.fromkeys(notes)]
    for volume, info in volume_info.items():
        main = [r for r in rows if r["volume"] == volume and r["ablation"] == DEFAULT_ABLATION]
        ablation_rows = [
            r
            for r in rows
            if r["volume"] == volume
            and r["method"] == "diffusionblend++"
            and (r["ablation"] != DEFAULT_ABLATION or config.ablations)
        ]
        shape = "×".join(map(str, info["shape"]))
        lines += [
            "",
            f"## {volume} ({shape}, spacing {info['spacing_mm']} mm)",
            "",
            f"Source: `{info['path']}`",
            "",
            _MD_HEADER,
            "|" + "---|" * _MD_HEADER.count(" | ") + "---|",
        ]
        lines += [_md_row(r) for r in main]
        if config.ablations:
            lines += [
                "",
                f"### diffusionblend++ ablations on {volume} (default: adjacency + cross, "
                "cross every 2nd step, 200 NFE)",
                "",
                _MD_HEADER,
                "|" + "---|" * _MD_HEADER.count(" | ") + "---|",
            ]
            lines += [_md_row(r) for r in ablation_rows]
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: json.dumps(row.get(k)) if isinstance(row.get(k), (dict, list)) else row.get(k)
                for k in COLUMNS
            }
        )
    return buffer.getvalue()


def _write_tables(
    config: BenchConfig,
    out: Path,
    rows: list[dict],
    machine: dict,
    volume_info: dict,
    notes: list[str],
) -> None:
    _atomic_write(out / "results.md", _markdown(config, rows, machine, volume_info, notes))
    _atomic_write(out / "results.csv", _csv_text(rows))
    payload = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "memory": MEMORY_NOTE,
        "config": config.to_dict(),
        "volumes": volume_info,
        "notes": list(dict.fromkeys(notes)),
        "columns": list(COLUMNS),
        "rows": [_json_safe({k: r.get(k) for k in COLUMNS}) for r in rows],
    }
    _atomic_write(out / "results.json", json.dumps(payload, indent=1) + "\n")


# --- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ctblend bench``."""
    add = parser.add_argument
    add("--out", default="bench", help="results folder (resumed when it holds cells)")
    add("--volumes", nargs="+", help="files, folders, MANIFEST roles (test, ood) or phantom[:Z]")
    add("--ct-dir", help="CT folder with MANIFEST.md (for roles and volume names)")
    add("--protocols", nargs="+", help=f"default {' '.join(BENCH_PROTOCOLS)}; '+noise' variants")
    add("--with-noise", action="store_true", help="add the +noise variant of every protocol")
    add("--methods", nargs="+", choices=BENCH_METHODS, help="default: all")
    add(
        "--ablations",
        nargs="*",
        choices=tuple(ABLATIONS),
        help="diffusionblend++ ablations (no names: all)",
    )
    add("--scale", help="cpu128 (default), paper256 or an in-plane size")
    add("--z-range", nargs=2, type=int, metavar=("START", "STOP"), help="slices START:STOP only")
    add("--seeds", nargs="+", type=int, help="seeds (noise and sampling), default 0")
    add("--nfe", type=int, help="NFE of every diffusion method (default 200, DDS 100)")
    add("--sirt-iterations", type=int)
    add("--tv-iterations", type=int)
    add("--tv-lam", type=float)
    add("--prior-blendpp", help="DiffusionBlend++ prior folder")
    add("--prior-blend", help="DiffusionBlend prior folder")
    add("--prior-slice2d", help="2D prior folder (dds, dds2d)")
    add("--fbp-unet", help="folder with one FBP-UNet folder per protocol")
    add("--geometry", help="2D geometry YAML used instead of the named protocols")
    add("--spacing", nargs=3, type=float, metavar=("DZ", "DY", "DX"), help="for .npy volumes")
    add("--device", help="cpu (default), cuda or auto")
    add("--threads", type=int, help="torch CPU threads")
    add("--no-volumes", action="store_true", help="do not store reconstructions (no panels)")
    add("--quick", action="store_true", help="tiny CI run: phantom at 32², few iterations")
    add("--config", help="BenchConfig YAML; command-line options override it")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The BenchConfig of parsed arguments (``--quick`` supplies tiny defaults)."""
    base = BenchConfig.from_yaml(args.config) if args.config else BenchConfig()
    values = base.to_dict()
    if args.quick:
        values.update(QUICK)
    given = {
        "out_dir": args.out,
        "volumes": args.volumes,
        "ct_dir": args.ct_dir,
        "protocols": args.protocols,
        "methods": args.methods,
        "ablations": (list(ABLATIONS) if args.ablations == [] else args.ablations),
        "scale": (int(args.scale) if args.scale and args.scale.isdigit() else args.scale),
        "z_range": args.z_range,
        "seeds": args.seeds,
        "nfe": args.nfe,
        "sirt_iterations": args.sirt_iterations,
        "tv_iterations": args.tv_iterations,
        "tv_lam": args.tv_lam,
        "prior_blendpp": args.prior_blendpp,
        "prior_blend": args.prior_blend,
        "prior_slice2d": args.prior_slice2d,
        "fbp_unet": args.fbp_unet,
        "geometry": args.geometry,
        "spacing_mm": args.spacing,
        "device": args.device,
    }
    values.update({k: v for k, v in given.items() if v is not None})
    if args.no_volumes:
        values["save_volumes"] = False
    if args.with_noise:
        names = [p for p in values["protocols"] if not p.endswith("+noise")]
        values["protocols"] = [*values["protocols"], *(f"{p}+noise" for p in names)]
    return BenchConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    """``ctblend bench``: run, print where the tables are; 1 if any cell failed."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    config = config_from_args(args)
    rows = run_bench(config)
    out = Path(config.out_dir)
    done = sum(r["status"] == "done" for r in rows)
    skipped = [r for r in rows if str(r["status"]).startswith("skipped")]
    failed = [r for r in rows if str(r["status"]).startswith("failed")]
    print(f"{len(rows)} cells: {done} done, {len(skipped)} skipped, {len(failed)} failed")
    for row in skipped + failed:
        cell = " ".join(str(row[k]) for k in ("volume", "protocol", "method", "ablation"))
        print(f"  {cell}: {row['status']}")
    print(f"tables: {out / 'results.md'}, {out / 'results.csv'}, {out / 'results.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    import sys

    _parser = argparse.ArgumentParser(prog="python -m ctblend.bench")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
