"""The demo: simulate sparse-view CT of a volume, reconstruct it several ways, score and show it.

``run_demo()`` with no arguments uses the shipped real-CT excerpt (:func:`demo_excerpt`: the 32
central of 48 slices of the held-out test chest CT ``cptac_pda_chest``, 128 × 128, CC BY 3.0, see
``ctblend/data/excerpts/LICENSE.md``), 8 noiseless parallel views (``svct8``), and runs FBP,
SIRT, TV, FBP-UNet (when a network for the protocol is shipped as
``ctblend/weights/fbpunet_cpu128_<protocol>``) and — when a DiffusionBlend++ prior is installed in
``ctblend/weights/blendpp_cpu128`` (or given) — DiffusionBlend++ with 50 NFE. It prints a
PSNR/SSIM table and writes a figure, a sinogram view, the table and an HDF5 file with every
reconstruction. ``phantom=True`` uses the procedural phantom instead; ``volume_path`` any volume
``read_volume`` reads (DICOM folder, HDF5, NIfTI, NumPy).

Also here: the input side shared with the CLI (:func:`load_volume`, :func:`phantom_input`)
and the location of shipped priors (:func:`shipped_prior`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ctblend.data.phantom import ct_phantom, phantom_spacing_mm
from ctblend.data.scaling import HU_MIN, HU_RANGE, hu_to_unit, scale_size, to_scale
from ctblend.figures import PanelFigure, plot_panels, plot_sinogram
from ctblend.geometry_config import Acquisition, write_arrays
from ctblend.io import DataError, read_volume
from ctblend.io.output import check_writable, write_text
from ctblend.metrics import volume_scores
from ctblend.runtime import resolve_device

__all__ = [
    "DEMO_METHODS",
    "SHIPPED_PRIOR",
    "DemoResult",
    "VolumeInput",
    "demo_excerpt",
    "hu_window",
    "load_volume",
    "phantom_input",
    "resolve_prior",
    "run_demo",
    "score_table",
    "shipped_prior",
    "weights_dir",
]

SHIPPED_PRIOR = "blendpp_cpu128"
DEMO_METHODS = ("fbp", "sirt", "tv", "fbp-unet", "diffusionblend++")
DEFAULT_WINDOW_HU = (-1000.0, 600.0)
# Settings of the full demo and of the shortened one (--quick, used in CI).
FULL = {"n_slices": 32, "nfe": 50, "sirt_iterations": 200, "tv_iterations": 100}
QUICK = {"n_slices": 9, "nfe": 10, "sirt_iterations": 50, "tv_iterations": 30}
TV_LAMBDA = 0.01


def hu_window(low: float, high: float) -> tuple[float, float]:
    """An HU display window in [0, 1] units."""
    return ((low - HU_MIN) / HU_RANGE, (high - HU_MIN) / HU_RANGE)


def demo_excerpt() -> Path:
    """The shipped real-CT excerpt: 48 central slices of the test volume ``cptac_pda_chest`` at
    128² (int16 HU, by ``benchmarks/make_demo_excerpt.py``; CC BY 3.0, attribution beside it)."""
    return Path(__file__).resolve().parent / "data" / "excerpts" / "cptac_pda_chest_excerpt.h5"


def weights_dir() -> Path:
    """The folder of shipped priors (``ctblend/weights``)."""
    return Path(__file__).resolve().parent / "weights"


def shipped_prior(name: str = SHIPPED_PRIOR) -> Path | None:
    """The shipped prior folder ``ctblend/weights/<name>`` if it is installed, else None."""
    folder = weights_dir() / name
    return folder if (folder / "config.json").is_file() else None


def resolve_prior(path_or_name: str | os.PathLike) -> Path:
    """A checkpoint path as given, or the shipped prior of that name when no such path exists."""
    path = Path(path_or_name)
    if not path.exists():
        shipped = shipped_prior(str(path_or_name)) if len(path.parts) == 1 else None
        if shipped is None:
            raise FileNotFoundError(
                f"{path}: no such checkpoint folder (and no shipped prior of that name in "
                f"{weights_dir()})"
            )
        return shipped
    return path


@dataclass(frozen=True)
class VolumeInput:
    """A volume ready for simulation: ``x`` ``(Z, H, W)`` float32 in [0, 1] at the chosen scale,
    ``spacing_mm`` ``(dz, dy, dx)`` after scaling, a description of the source and its z range."""

    x: np.ndarray
    spacing_mm: tuple[float, float, float]
    source: str
    z_range: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict)


def phantom_input(n_slices: int, size: int | str = 128, seed: int = 0) -> VolumeInput:
    """The procedural phantom ``(n_slices, size, size)`` (see :func:`ctblend.data.ct_phantom`)."""
    shape = (int(n_slices), scale_size(size), scale_size(size))
    x = ct_phantom(shape, seed=seed)
    return VolumeInput(x, phantom_spacing_mm(shape), f"phantom(seed={seed})", (0, shape[0]))


def load_volume(
    path: str | os.PathLike,
    size: int | str = "cpu128",
    slices: tuple[int, int] | None = None,
    n_central: int | None = None,
) -> VolumeInput:
    """Read any volume, keep slices ``[a, b)`` (or the ``n_central`` middle ones, or all), map HU
    to [0, 1] and resize in-plane to ``size`` (a scale name or an int)."""
    volume = read_volume(path)
    z = volume.shape[0]
    if slices is not None:
        a, b = slices
        if not 0 <= a < b <= z:
            raise DataError(f"{path}: slices {a}:{b} outside the volume's {z} slices")
    elif n_central is not None and n_central < z:
        a = (z - n_central) // 2
        b = a + n_central
    else:
        a, b = 0, z
    hu = volume.hu[a:b]
    target = scale_size(size)
    x = np.ascontiguousarray(to_scale(hu_to_unit(hu), target), dtype=np.float32)
    dz, dy, dx = volume.spacing_mm
    spacing = (dz, dy * hu.shape[1] / target, dx * hu.shape[2] / target)
    return VolumeInput(x, spacing, str(path), (a, b), dict(volume.meta))


def score_table(scores: Mapping[str, Mapping[str, float]], seconds: Mapping[str, float]) -> str:
    """A Markdown table: method, per-plane PSNR (dB) / SSIM, volume PSNR (the figure's number),
    wall time."""
    head = "| method | axial PSNR | axial SSIM | coronal PSNR | coronal SSIM | sagittal PSNR "
    head += "| sagittal SSIM | volume PSNR | time (s) |"
    lines = [head, "|---" + "|---:" * 8 + "|"]
    for method, s in scores.items():
        cells = [method]
        for plane in ("axial", "coronal", "sagittal"):
            cells += [f"{s[f'{plane}_psnr']:.2f}", f"{s[f'{plane}_ssim']:.3f}"]
        cells.append(f"{s['volume_psnr']:.2f}")
        cells.append(f"{seconds.get(method, float('nan')):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class DemoResult:
    """Scores (method → :func:`ctblend.metrics.volume_scores`), wall times, the table, the files
    written, the prior used (None when DiffusionBlend++ did not run) and the panel figure."""

    scores: dict[str, dict[str, float]]
    seconds: dict[str, float]
    table: str
    files: dict[str, Path]
    prior: Path | None
    figure: PanelFigure


def _load_demo_prior(prior, size: int, device, precision: str, log) -> tuple[Any, Path | None]:
    from ctblend.priors.base import precision_options
    from ctblend.priors.loading import load_prior, read_spec

    if prior is None:
        path = shipped_prior()
        if path is None:
            log(
                f"no shipped prior is installed ({weights_dir() / SHIPPED_PRIOR} not found): "
                "running fbp, sirt and tv only (train one with `ctblend train` or pass --prior)"
            )
            return None, None
        trained = read_spec(path).image_size
        if trained != size:
            log(f"the shipped prior works at {trained}×{trained}, not {size}: skipping it")
            return None, None
    else:
        path = resolve_prior(prior)
    options = precision_options(precision, device)
    return load_prior(path, kind="blend++", image_size=size, device=device, **options), path


def _shipped_fbp_unet(protocol: str, size: int, device):
    """The shipped FBP-UNet ``fbpunet_<scale>_<protocol>`` for this protocol and size, or None."""
    from ctblend.baselines.fbp_unet import FBPUNet
    from ctblend.data.scaling import SCALES

    scale = next((name for name, n in SCALES.items() if n == size), str(size))
    path = shipped_prior(f"fbpunet_{scale}_{protocol}")
    if path is None:
        return None
    return FBPUNet.load(path, protocol=protocol, image_size=size, device=device)


def run_demo(
    volume_path: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "ctblend_demo",
    *,
    phantom: bool = False,
    nfe: int | None = None,
    n_slices: int | None = None,
    size: int | str = "cpu128",
    seed: int = 0,
    quick: bool = False,
    slices: tuple[int, int] | None = None,
    protocol: str = "svct8",
    prior: str | os.PathLike | None = None,
    methods: Sequence[str] = DEMO_METHODS,
    window_hu: tuple[float, float] = DEFAULT_WINDOW_HU,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo and write ``demo.png``, ``demo_sinogram.png``, ``demo.md`` and ``demo.h5``
    (datasets ``truth``, ``sinogram``, ``recon/<method>``; scores and settings as attributes)
    into ``out_dir``. The input: ``volume_path``, else the procedural phantom when ``phantom``,
    else the shipped excerpt (:func:`demo_excerpt`). ``quick`` shortens every default (9 slices,
    10 NFE, fewer iterations). ``precision``: the prior's network precision, ``auto`` (bf16 where
    the hardware has it natively, else fp32), ``fp32`` (reference) or ``bf16`` (fp32 with a
    logged reason where the CPU lacks native bf16)."""
    from ctblend.methods import METHODS, method_steps, reconstruct

    out = check_writable(out_dir)
    if phantom and volume_path is not None:
        raise ValueError(f"both a volume ({volume_path}) and the phantom asked for; expected one")
    settings = dict(QUICK if quick else FULL)
    nfe = settings["nfe"] if nfe is None else int(nfe)
    n_slices = settings["n_slices"] if n_slices is None else int(n_slices)
    unknown = [m for m in methods if m not in DEMO_METHODS]
    if unknown:
        raise ValueError(f"demo methods {unknown}; expected some of {', '.join(DEMO_METHODS)}")
    if nfe < 1 or n_slices < 3:
        raise ValueError(f"nfe={nfe}, n_slices={n_slices}; expected nfe >= 1 and n_slices >= 3")
    dev = resolve_device(device)
    size = scale_size(size)
    if phantom:
        vol = phantom_input(n_slices, size, seed)
    else:
        path = demo_excerpt() if volume_path is None else volume_path
        vol = load_volume(path, size, slices, n_central=None if slices else n_slices)
    acquisition = Acquisition(protocol=protocol)
    truth = torch.from_numpy(vol.x)
    A = acquisition.operator(truth.shape)
    y = acquisition.simulate(A, truth, pixel_mm=vol.spacing_mm[1], seed=seed).to(dev)
    z, h, w = truth.shape
    log(
        f"ctblend demo: {vol.source}, {z} slices of {h}×{w} (z {vol.z_range[0]}:{vol.z_range[1]}), "
        f"{acquisition.name}: {A.range_shape[1]} views × {A.range_shape[2]} bins, "
        f"{'Poisson noise' if acquisition.noise else 'noiseless'}"
    )
    networks: dict[str, Any] = {}
    prior_path = None
    if "diffusionblend++" in methods:
        networks["diffusionblend++"], prior_path = _load_demo_prior(
            prior, size, dev, precision, log
        )
    if "fbp-unet" in methods:
        networks["fbp-unet"] = _shipped_fbp_unet(acquisition.name, size, dev)
    options = {
        "fbp": {},
        "fbp-unet": {},
        "sirt": {"iterations": settings["sirt_iterations"]},
        "tv": {"lam": TV_LAMBDA, "iterations": settings["tv_iterations"]},
        "diffusionblend++": {"nfe": nfe, "seed": seed},
    }
    recons: dict[str, torch.Tensor] = {}
    records: dict[str, dict] = {}
    scores: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for method in (m for m in METHODS if m in methods):
        net = networks.get(method)
        if method in networks and net is None:
            continue
        config = dict(options[method])
        steps = method_steps(method, config)
        bar = tqdm(
            total=steps, desc=method, unit="step", disable=not (progress and steps), leave=False
        )
        if steps:
            config["callback"] = lambda *_, bar=bar: bar.update(1)
        start = time.perf_counter()
        x, record = reconstruct(method, y, A, net, **config)
        seconds[method] = time.perf_counter() - start
        bar.close()
        recons[method] = x.detach().float().cpu()
        records[method] = record
        scores[method] = volume_scores(recons[method], truth)
        log(
            f"  {method:<17} {seconds[method]:7.1f} s   axial PSNR "
            f"{scores[method]['axial_psnr']:6.2f} dB  SSIM {scores[method]['axial_ssim']:.3f}"
        )
    table = score_table(scores, seconds)
    log("")
    log(table)

    out.mkdir(parents=True, exist_ok=True)
    title = f"{Path(vol.source).name} — {acquisition.name}"
    figure = plot_panels(
        {"ground truth": truth, **recons},
        out / "demo.png",
        window=hu_window(*window_hu),
        spacing=vol.spacing_mm,
        title=title,
        psnr={method: s["volume_psnr"] for method, s in scores.items()},
    )
    files = {
        "figure": figure.path,
        "sinogram": out / "demo_sinogram.png",
        "table": out / "demo.md",
        "hdf5": out / "demo.h5",
    }
    plot_sinogram(y.cpu(), files["sinogram"], title=title)
    write_text(files["table"], f"# ctblend demo\n\n{title}, seed {seed}\n\n{table}\n")
    attrs = {
        "kind": "ctblend-demo",
        "source": vol.source,
        "z_range": list(vol.z_range),
        "seed": seed,
        **acquisition.to_attrs(truth.shape),
        "prior": None if prior_path is None else str(prior_path),
        "records": records,
        "scores": scores,
        "seconds": seconds,
        "units": "(HU + 1024) / 4095",
    }
    arrays = {"truth": truth, "sinogram": y.cpu(), **{f"recon/{m}": r for m, r in recons.items()}}
    write_arrays(files["hdf5"], arrays, spacing_mm=vol.spacing_mm, attrs=attrs)
    log("")
    log("wrote " + ", ".join(str(p) for p in files.values()))
    return DemoResult(scores, seconds, table, files, prior_path, figure)
