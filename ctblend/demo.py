"""The demo: simulate sparse-view CT of a volume, reconstruct it several ways, score and show it.

``run_demo()`` with no arguments uses the shipped real-CT excerpt (:func:`demo_excerpt`: the 32
central of 48 slices of the held-out test chest CT ``cptac_pda_chest``, 128 × 128, CC BY 3.0, see
``ctblend/data/excerpts/LICENSE.md``), 8 noiseless parallel views (``svct8``), and runs FBP,
SIRT, TV, FBP-UNet (when a network for the protocol is shipped as
``ctblend/weights/fbpunet_cpu128_<protocol>``), DDS (the shipped 2D prior ``slice2d_cpu128`` with
ADMM TV along z) and — when a DiffusionBlend++ prior is installed in
``ctblend/weights/blendpp_cpu128`` (or given) — DiffusionBlend++, both with 50 NFE. It prints a
PSNR/SSIM table and writes a figure, a sinogram view, the table and an HDF5 file with every
reconstruction. ``phantom=True`` uses the procedural phantom instead; ``volume_path`` any volume
``read_volume`` reads (DICOM folder, HDF5, NIfTI, NumPy).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctblend.data.scaling import scale_size
from ctblend.figures import PanelFigure, plot_sinogram
from ctblend.geometry_config import Acquisition
from ctblend.io.output import check_writable, write_text
from ctblend.pipeline import METHODS
from ctblend.pipeline.run import plot_case, run_method, simulate_case, write_case
from ctblend.pipeline.volumes import DEFAULT_WINDOW_HU, load_volume, phantom_input
from ctblend.pipeline.weights import (
    SHIPPED_PRIOR,
    resolve_prior,
    shipped_name,
    shipped_prior,
    weights_dir,
)
from ctblend.runtime import resolve_device

__all__ = ["DEMO_METHODS", "DemoResult", "demo_excerpt", "run_demo", "score_table"]

DEMO_METHODS = ("fbp", "sirt", "tv", "fbp-unet", "dds", "diffusionblend++")
# Settings of the full demo and of the shortened one (--quick, used in CI).
FULL = {"n_slices": 32, "nfe": 50, "sirt_iterations": 200, "tv_iterations": 100}
QUICK = {"n_slices": 9, "nfe": 10, "sirt_iterations": 50, "tv_iterations": 30}
TV_LAMBDA = 0.01


def demo_excerpt() -> Path:
    """The shipped real-CT excerpt: 48 central slices of the test volume ``cptac_pda_chest`` at
    128² (int16 HU, by ``benchmarks/make_demo_excerpt.py``; CC BY 3.0, attribution beside it)."""
    return Path(__file__).resolve().parent / "data" / "excerpts" / "cptac_pda_chest_excerpt.h5"


def score_table(scores: Mapping[str, Mapping[str, float]], seconds: Mapping[str, float]) -> str:
    """A Markdown table: method, per-plane PSNR (dB) / SSIM over every slice and inside the body
    (a / c / s), volume PSNR (the figure's number), wall time."""
    head = "| method | axial PSNR | axial SSIM | coronal PSNR | coronal SSIM | sagittal PSNR "
    head += "| sagittal SSIM | body PSNR a / c / s | volume PSNR | time (s) |"
    lines = [head, "|---" + "|---:" * 9 + "|"]
    planes = ("axial", "coronal", "sagittal")
    for method, s in scores.items():
        cells = [method]
        for plane in planes:
            cells += [f"{s[f'{plane}_psnr']:.2f}", f"{s[f'{plane}_ssim']:.3f}"]
        cells.append(" / ".join(f"{s[f'{plane}_psnr_body']:.2f}" for plane in planes))
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


def _load_demo_prior(
    kind: str, prior, size: int, device, precision: str, log
) -> tuple[Any, Path | None]:
    """The ``kind`` prior of the demo: ``prior`` (a folder or shipped name), else the shipped
    one of that kind at ``size``² (None, with a logged reason, when there is none)."""
    from ctblend.data.scaling import SCALES
    from ctblend.priors.base import precision_options
    from ctblend.priors.loading import load_prior, read_spec

    if prior is None:
        scale = next((name for name, n in SCALES.items() if n == size), str(size))
        name = SHIPPED_PRIOR if kind == "blend++" else shipped_name(kind, scale)
        path = shipped_prior(name)
        if path is None:
            log(
                f"no shipped {kind} prior is installed ({weights_dir() / name} not found): "
                "skipping the methods that need it (train one with `ctblend train`)"
            )
            return None, None
        trained = read_spec(path).image_size
        if trained != size:
            log(f"the shipped {kind} prior works at {trained}×{trained}, not {size}: skipping it")
            return None, None
    else:
        path = resolve_prior(prior)
    options = precision_options(precision, device)
    return load_prior(path, kind=kind, image_size=size, device=device, **options), path


def _shipped_fbp_unet(protocol: str, size: int, device):
    """The shipped FBP-UNet ``fbpunet_<scale>_<protocol>`` for this protocol and size, or None."""
    from ctblend.baselines.fbp_unet import FBPUNet
    from ctblend.data.scaling import SCALES

    scale = next((name for name, n in SCALES.items() if n == size), str(size))
    path = shipped_prior(shipped_name("fbp-unet", scale, protocol))
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
    samples: int = 1,
    quick: bool = False,
    slices: tuple[int, int] | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
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
    10 NFE, fewer iterations). ``samples``: posterior samples of each diffusion method (K > 1:
    their mean is shown and scored, ``std/<method>`` and an uncertainty row beside it).
    ``spacing_mm``: the voxel size of a ``volume_path`` that does not record one (``.npy``).
    ``precision``: the prior's network precision, ``auto`` (bf16 where
    the hardware has it natively, else fp32), ``fp32`` (reference) or ``bf16`` (fp32 with a
    logged reason where the CPU lacks native bf16)."""
    out = check_writable(out_dir)
    if phantom and volume_path is not None:
        raise ValueError(f"both a volume ({volume_path}) and the phantom asked for; expected one")
    settings = dict(QUICK if quick else FULL)
    nfe = settings["nfe"] if nfe is None else int(nfe)
    n_slices = settings["n_slices"] if n_slices is None else int(n_slices)
    unknown = [m for m in methods if m not in DEMO_METHODS]
    if unknown:
        raise ValueError(f"demo methods {unknown}; expected some of {', '.join(DEMO_METHODS)}")
    if nfe < 1 or n_slices < 3 or samples < 1:
        raise ValueError(
            f"nfe={nfe}, n_slices={n_slices}, samples={samples}; expected nfe >= 1, "
            "n_slices >= 3 and samples >= 1"
        )
    dev = resolve_device(device)
    size = scale_size(size)
    if phantom:
        vol = phantom_input(n_slices, size, seed, slices)
    else:
        path = demo_excerpt() if volume_path is None else volume_path
        vol = load_volume(
            path, size, slices, n_central=None if slices else n_slices, spacing_mm=spacing_mm
        )
    acquisition = Acquisition(protocol=protocol)
    case = simulate_case(vol, acquisition, seed)  # on the CPU; y then to the device
    case = dataclasses.replace(case, y=case.y.to(dev))
    z, h, w = case.A.domain_shape
    log(
        f"ctblend demo: {vol.source}, {z} slices of {h}×{w} (z {vol.z_range[0]}:{vol.z_range[1]}), "
        f"{acquisition.name}: {case.A.range_shape[1]} views × {case.A.range_shape[2]} bins, "
        f"{'Poisson noise' if acquisition.noise else 'noiseless'}"
    )
    networks: dict[str, Any] = {}
    prior_path = None
    if "diffusionblend++" in methods:
        networks["diffusionblend++"], prior_path = _load_demo_prior(
            "blend++", prior, size, dev, precision, log
        )
    if "dds" in methods:
        networks["dds"], _ = _load_demo_prior("slice2d", None, size, dev, precision, log)
    if "fbp-unet" in methods:
        networks["fbp-unet"] = _shipped_fbp_unet(acquisition.name, size, dev)
    for method, net in networks.items():  # before any method runs, not after FBP … TV
        steps = getattr(getattr(net, "schedule", None), "num_timesteps", None)
        if steps is not None and nfe > steps:
            raise ValueError(f"{method}: option nfe={nfe}; expected an integer in [1, {steps}]")
    diffusion = {"nfe": nfe, "seed": seed, **({"samples": samples} if samples > 1 else {})}
    options = {
        "sirt": {"iterations": settings["sirt_iterations"]},
        "tv": {"lam": TV_LAMBDA, "iterations": settings["tv_iterations"]},
        "dds": diffusion,
        "diffusionblend++": diffusion,
    }
    outcomes = {}
    for method in (m for m in METHODS if m in methods):
        net = networks.get(method)
        if method in networks and net is None:
            continue
        outcomes[method] = run_method(
            case, method, net, options.get(method), progress=method if progress else None
        )
        s = outcomes[method].scores
        log(
            f"  {method:<17} {outcomes[method].seconds:7.1f} s   axial PSNR "
            f"{s['axial_psnr']:6.2f} dB  SSIM {s['axial_ssim']:.3f}"
        )
    scores = {m: o.scores for m, o in outcomes.items()}
    seconds = {m: o.seconds for m, o in outcomes.items()}
    table = score_table(scores, seconds)
    log("")
    log(table)

    out.mkdir(parents=True, exist_ok=True)
    title = f"{Path(vol.source).name} — {acquisition.describe()}"
    recons = {m: o.x for m, o in outcomes.items()}
    psnr = {method: s["volume_psnr"] for method, s in scores.items()}
    stds = {m: o.std for m, o in outcomes.items() if o.std is not None}
    figure = plot_case(case, recons, out / "demo.png", title, psnr, window_hu, std=stds or None)
    files = {
        "figure": figure.path,
        "sinogram": out / "demo_sinogram.png",
        "table": out / "demo.md",
        "hdf5": out / "demo.h5",
    }
    plot_sinogram(case.y.cpu(), files["sinogram"], title=title)
    write_text(files["table"], f"# ctblend demo\n\n{title}, seed {seed}\n\n{table}\n")
    attrs = {
        "kind": "ctblend-demo",
        "seed": seed,
        "prior": None if prior_path is None else str(prior_path),
        "records": {m: o.record for m, o in outcomes.items()},
        "scores": scores,
        "seconds": seconds,
    }
    arrays = {
        "truth": case.truth,
        "sinogram": case.y.cpu(),
        **{f"recon/{m}": r for m, r in recons.items()},
        **{f"std/{m}": sd for m, sd in stds.items()},
    }
    write_case(files["hdf5"], case, arrays, attrs)
    log("")
    log("wrote " + ", ".join(str(p) for p in files.values()))
    return DemoResult(scores, seconds, table, files, prior_path, figure)
