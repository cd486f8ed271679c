"""The ``ctblend`` command: a thin shell over the library (parse, call, print).

Subcommands: ``demo``, ``simulate``, ``recon``, ``train``, ``sample``, ``bench``, ``info`` (and
``train-fbp-unet``; ``bench`` and it take their options from their own modules). Each
takes ``--device``, ``--seed`` and ``--quiet``; ``--config FILE.yaml`` supplies option defaults
(keys are option names; ``train --config`` names a training preset or YAML instead) and options
given on the command line win; ``recon`` and ``train`` take ``KEY=VALUE`` overrides of the method
or training config. Progress bars go to stderr and are off under ``--quiet`` or ``CI``.

User errors (``ValueError`` — including ``DataError`` and ``CheckpointError`` — and
``FileNotFoundError``) end with one line ``ctblend: error: …`` on stderr and exit status 2;
outputs are written atomically, so a failed command leaves no file behind. Heavy modules are
imported inside the handlers, so ``--help`` answers at once.

``recon --inputs DIR`` under ``torchrun --nproc_per_node N -m ctblend recon …`` gives every rank
the inputs ``rank, rank + N, …`` (no process group is needed); existing outputs are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
VOLUME_SUFFIXES = (*HDF5_SUFFIXES, ".nii", ".nii.gz", ".npy", ".npz")
DEFAULT_WINDOW_HU = (-1000.0, 600.0)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------------------------
# Small parsing helpers
# ---------------------------------------------------------------------------------------------


def _slice_range(text: str) -> tuple[int, int]:
    """``"A:B"`` → ``(A, B)``: slices A … B−1 along z."""
    try:
        a, b = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"slices {text!r}; expected A:B (z from A to B-1)"
        ) from None
    if not 0 <= a < b:
        raise argparse.ArgumentTypeError(f"slices {text!r}; expected 0 <= A < B")
    return a, b


def _scale(text: str) -> str | int:
    """``cpu128`` / ``paper256`` (checked where used) or a pixel count."""
    return int(text) if str(text).isdigit() else text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}; expected a positive integer")
    return value


def _is_override(item: str) -> bool:
    key = item.split("=", 1)[0]
    return "=" in item and key.replace(".", "_").replace("-", "_").isidentifier()


def _split_items(items: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Positional items → (paths, ``KEY=VALUE`` overrides with YAML-typed values)."""
    import yaml

    paths, overrides = [], {}
    for item in items:
        if _is_override(item) and not Path(item).exists():
            key, text = item.split("=", 1)
            try:
                overrides[key.replace("-", "_")] = yaml.safe_load(text) if text else None
            except yaml.YAMLError:
                raise ValueError(f"override {item!r}: cannot parse the value") from None
        else:
            paths.append(item)
    return paths, overrides


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars unless ``--quiet`` or ``CI`` is set (and only on rank 0 under torchrun)."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return not (args.quiet or ci) and int(os.environ.get("RANK", "0")) == 0


def _device(name: str | None):
    from ctblend.runtime import resolve_device

    return resolve_device(name)


def _acquisition(args: argparse.Namespace, required: bool):
    """The Acquisition of ``--protocol`` / ``--geometry`` / ``--noise`` (None when not asked)."""
    from ctblend.geometry_config import Acquisition, geometry_from_yaml

    if args.protocol and args.geometry:
        raise ValueError("--protocol and --geometry both given; expected one of them")
    if args.geometry:
        geometry, noise = geometry_from_yaml(args.geometry)
        return Acquisition(geometry=geometry, noise=noise or args.noise)
    if args.protocol or required:
        name = args.protocol or "svct8"
        if args.noise and not name.endswith("+noise"):
            name += "+noise"
        return Acquisition(protocol=name)
    if args.noise:
        raise ValueError("--noise needs --protocol or --geometry (a volume to simulate from)")
    return None


def _volume_input(source: str, args: argparse.Namespace):
    """``phantom`` or a volume path → VolumeInput at ``--scale`` with ``--slices``."""
    from ctblend.demo import load_volume, phantom_input

    if source == "phantom":
        return phantom_input(args.phantom_slices, args.scale, args.seed or 0)
    return load_volume(source, args.scale, args.slices)


@contextlib.contextmanager
def _removed_on_error(*paths: Path) -> Iterator[None]:
    """On any exception in the block, remove those of ``paths`` that did not exist before."""
    existed = {p: p.exists() for p in paths}
    try:
        yield
    except BaseException:
        for path, was_there in existed.items():
            if not was_there:
                path.unlink(missing_ok=True)
        raise


def _check_output(path: Path, suffixes: tuple[str, ...] = HDF5_SUFFIXES) -> Path:
    from ctblend.io.output import check_writable

    if not path.name.lower().endswith(suffixes):
        raise ValueError(f"--out {path}: expected a file name ending in {' or '.join(suffixes)}")
    if path.exists() and path.is_dir():
        raise ValueError(f"--out {path}: is a folder; expected a file name")
    check_writable(path.parent, f"--out {path}: folder")
    return path


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from ctblend.io.output import check_writable

    if args.volume and args.phantom:
        raise ValueError(f"--volume {args.volume} and --phantom both given; expected one")
    if args.volume and not Path(args.volume).exists():
        raise FileNotFoundError(f"--volume {args.volume}: no such file or folder")
    check_writable(args.out)
    from ctblend.demo import DEMO_METHODS, run_demo

    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else DEMO_METHODS
    start = time.perf_counter()
    run_demo(
        args.volume,
        args.out,
        phantom=args.phantom,
        nfe=args.nfe,
        n_slices=args.n_slices,
        size=args.size,
        seed=args.seed or 0,
        quick=args.quick,
        slices=args.slices,
        protocol=args.protocol,
        prior=args.prior,
        methods=methods,
        device=args.device or "auto",
        precision=args.precision,
        progress=_progress(args),
    )
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------------------------


def _cmd_simulate(args: argparse.Namespace) -> int:
    if args.volume != "phantom" and not Path(args.volume).exists():
        raise FileNotFoundError(f"{args.volume}: no such file or folder")
    import torch

    from ctblend.figures import plot_sinogram
    from ctblend.geometry_config import write_measurements

    acquisition = _acquisition(args, required=True)
    default = f"{'phantom' if args.volume == 'phantom' else _stem(Path(args.volume))}"
    out = _check_output(Path(args.out or f"{default}_{acquisition.name}.h5"))
    vol = _volume_input(args.volume, args)
    x = torch.from_numpy(vol.x)
    A = acquisition.operator(x.shape)
    seed = args.seed or 0
    y = acquisition.simulate(A, x, pixel_mm=vol.spacing_mm[1], seed=seed)
    attrs = {
        "source": vol.source,
        "z_range": list(vol.z_range),
        "scale": str(args.scale),
        "seed": seed,
        "units": "(HU + 1024) / 4095",
    }
    png = out.with_suffix(".png")
    with _removed_on_error(png, out):
        plot_sinogram(y, png, title=f"{vol.source} — {acquisition.name}")
        write_measurements(
            out,
            y,
            acquisition,
            volume_shape=x.shape,
            spacing_mm=vol.spacing_mm,
            truth=None if args.no_truth else x,
            attrs=attrs,
        )
    z, v, d = y.shape
    print(f"wrote {out} (sinogram {z}×{v}×{d}, {acquisition.name}) and {png}")
    return 0


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", *VOLUME_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# ---------------------------------------------------------------------------------------------
# recon
# ---------------------------------------------------------------------------------------------


def _method_options(method: str, overrides: dict[str, Any], args: argparse.Namespace) -> dict:
    """Validated keyword options for ``reconstruct(method, …)``."""
    from ctblend import methods as m

    options = dict(overrides)
    if args.nfe is not None:
        options["nfe"] = args.nfe
    if method in m.PRIOR_OF_METHOD and args.seed is not None:
        options.setdefault("seed", args.seed)
    if "callback" in options:
        raise ValueError(f"method {method!r}: 'callback' is not a command-line option")
    m.check_options(method, options)
    return options


def _load_method_prior(method: str, args: argparse.Namespace, device):
    from ctblend.demo import resolve_prior, shipped_prior
    from ctblend.methods import PRIOR_OF_METHOD
    from ctblend.priors.base import precision_options
    from ctblend.priors.loading import load_prior

    if method == "fbp-unet":
        from ctblend.baselines.fbp_unet import FBPUNet

        if not args.prior:
            raise ValueError("method 'fbp-unet' needs --prior FOLDER (an FBP-UNet network)")
        path = resolve_prior(args.prior)
        return FBPUNet.load(path, device=device), path
    if method not in PRIOR_OF_METHOD:
        return None, None
    if args.prior:
        path = resolve_prior(args.prior)
    elif method == "diffusionblend++" and shipped_prior() is not None:
        path = shipped_prior()
    else:
        raise ValueError(
            f"method {method!r} needs a trained {PRIOR_OF_METHOD[method]!r} prior: pass "
            "--prior CHECKPOINT (no shipped prior is installed for it)"
        )
    options = precision_options(args.precision, device)
    return load_prior(path, kind=PRIOR_OF_METHOD[method], device=device, **options), path


def _input_kind(path: Path) -> str | None:
    """None for a measurement file (dataset ``sinogram``), else what kind of volume ``path`` is;
    an unreadable or unrecognised HDF5 file is a one-line error saying why."""
    if str(path) == "phantom" and not path.exists():
        return "the procedural phantom"
    if path.is_dir():
        return "a folder, read as a DICOM series"
    if not path.name.lower().endswith(HDF5_SUFFIXES):
        return f"a {path.suffix or 'volume'} file"
    from ctblend.io.hdf5 import open_hdf5

    with open_hdf5(path) as f:
        names = sorted(f.keys())
    if "sinogram" in names:
        return None
    if "hu" in names:
        return "an HDF5 volume: dataset 'hu', no 'sinogram'"
    raise ValueError(
        f"{path}: neither measurements (dataset 'sinogram') nor a volume (dataset 'hu'); "
        f"found datasets {names}"
    )


def _batch_entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"--inputs {folder}: not a folder")
    entries = [
        p
        for p in sorted(folder.iterdir())
        if not p.name.startswith(".")
        and (p.is_dir() or p.name.lower().endswith((*VOLUME_SUFFIXES, ".nii.gz")))
    ]
    if not entries:
        raise ValueError(
            f"--inputs {folder}: no volumes or measurement files (expected .h5, .nii(.gz), "
            ".npy/.npz files or DICOM series folders)"
        )
    return entries


def _recon_one(
    source: Path,
    is_measurements: bool,
    out: Path,
    method: str,
    options: dict,
    acquisition,
    prior,
    prior_path,
    args: argparse.Namespace,
    device,
) -> dict:
    """Reconstruct one input into ``out`` (+ PNG); returns the metrics (or {})."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from ctblend.demo import hu_window
    from ctblend.figures import plot_panels
    from ctblend.geometry_config import read_measurements, write_arrays
    from ctblend.methods import method_steps, reconstruct
    from ctblend.metrics import volume_scores

    start = time.perf_counter()
    if is_measurements:
        if acquisition is not None:
            raise ValueError(
                f"{source} already holds measurements; drop --protocol/--geometry/--noise"
            )
        meas = read_measurements(source)
        acq, spacing, truth = meas.acquisition, meas.spacing_mm, meas.truth
        shape = meas.volume_shape
        y = torch.from_numpy(meas.sinogram)
        described = {"source": meas.attrs.get("source", str(source))}
    else:
        vol = _volume_input(str(source), args)
        acq, spacing, truth = acquisition, vol.spacing_mm, vol.x
        shape = vol.x.shape
        x = torch.from_numpy(vol.x)
        y = acq.simulate(acq.operator(x.shape), x, pixel_mm=spacing[1], seed=args.seed or 0)
        described = {"source": vol.source, "z_range": list(vol.z_range)}
    if method == "fbp-unet" and (acq.protocol is None or acq.protocol != prior.protocol):
        raise ValueError(
            f"{prior_path}: FBP-UNet was trained for protocol {prior.protocol!r}, but {source} "
            f"uses {acq.name!r} (one network per protocol)"
        )
    A = acq.operator(shape)
    y = y.to(device)
    options = dict(options)
    bars = []  # opened at the first step, so that input errors come before any bar
    steps = method_steps(method, options)
    if steps:

        def tick(*_) -> None:
            if not bars:
                bars.append(
                    tqdm(
                        total=steps,
                        desc=f"{source.name} {method}",
                        unit="step",
                        disable=not _progress(args),
                        leave=False,
                    )
                )
            bars[0].update(1)

        options["callback"] = tick
    try:
        recon, record = reconstruct(method, y, A, prior, **options)
    finally:
        for bar in bars:
            bar.close()
    recon = recon.detach().float().cpu()
    metrics = volume_scores(recon, truth) if truth is not None else None
    panels = {} if truth is None else {"ground truth": truth}
    if method != "fbp":
        fbp, _ = reconstruct("fbp", y, A)
        panels["fbp"] = fbp.detach().float().cpu()
    panels[method] = recon
    attrs = {
        "kind": "ctblend-recon",
        "method": method,
        "config": record.get("config", {}),
        "seed": record.get("seed") if record.get("seed") is not None else args.seed or 0,
        "nfe": record.get("nfe", 0),
        "timings": {
            "reconstruct_s": record.get("seconds"),
            "prior_s": record.get("prior_seconds"),
            "data_consistency_s": record.get("dc_seconds"),
            "total_s": time.perf_counter() - start,
        },
        "metrics": metrics,
        "input": str(source),
        **described,
        **acq.to_attrs(shape),
        "volume_shape": list(shape),
        "prior": None if prior_path is None else str(prior_path),
        "device": str(device),
        "units": "(HU + 1024) / 4095",
    }
    png = out.with_suffix(".png")
    with _removed_on_error(png, out):
        plot_panels(
            panels,
            png,
            window=hu_window(*DEFAULT_WINDOW_HU),
            spacing=spacing,
            title=f"{source.name} — {acq.name} — {method}",
            psnr={method: metrics["volume_psnr"]} if metrics else None,
        )
        write_arrays(out, {"recon": np.asarray(recon)}, spacing_mm=spacing, attrs=attrs)
    return metrics or {}


def _cmd_recon(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    paths, overrides = _split_items(args.items)
    overrides = {**(args.options or {}), **overrides}
    method = args.method
    if args.inputs:
        if paths:
            raise ValueError(f"both --inputs and an input ({paths[0]}) given; expected one")
        entries = _batch_entries(Path(args.inputs))
        folder = Path(args.out or f"{Path(args.inputs).name}_{method}")
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--out {folder}: exists and is not a folder")
        from ctblend.io.output import check_writable

        check_writable(folder)
        jobs = [(e, folder / f"{_stem(e)}_{method}.h5") for e in entries]
    else:
        if len(paths) != 1:
            raise ValueError(
                f"expected one input (a measurement file or a volume), got {len(paths)}: "
                f"{' '.join(paths) or 'none'}; for many, use --inputs DIR"
            )
        source = Path(paths[0])
        if not source.exists() and paths[0] != "phantom":
            raise FileNotFoundError(f"{source}: no such file or folder")
        out = _check_output(Path(args.out or f"{_stem(source)}_{method}.h5"))
        jobs = [(source, out)]
    acquisition = _acquisition(args, required=False)
    options = _method_options(method, overrides, args)
    kinds: dict[Path, str | None | ValueError] = {}
    for source, _ in jobs:
        try:
            kinds[source] = _input_kind(source)
        except ValueError as exc:  # one bad entry of a batch fails alone, below
            if len(jobs) == 1:
                raise
            kinds[source] = exc
    for source, kind in kinds.items():
        if isinstance(kind, str) and acquisition is None:
            raise ValueError(
                f"{source} is a volume ({kind}), not measurements: give --protocol or "
                "--geometry to simulate its measurements (or pass a file written by "
                "`ctblend simulate`)"
            )
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    mine = jobs[rank::world]
    tag = f"[rank {rank}/{world}] " if world > 1 else ""
    if not mine:
        print(f"{tag}nothing to do ({len(jobs)} inputs for {world} processes)")
        return 0
    device = _device(args.device)
    prior, prior_path = _load_method_prior(method, args, device)
    failures = 0
    for source, out in tqdm(mine, desc="volumes", disable=not _progress(args) or len(mine) < 2):
        if out.exists() and not args.overwrite:
            tqdm.write(f"{tag}skip {out} (exists; --overwrite recomputes it)")
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            if isinstance(kinds[source], ValueError):
                raise kinds[source]
            metrics = _recon_one(
                source,
                kinds[source] is None,
                out,
                method,
                options,
                acquisition,
                prior,
                prior_path,
                args,
                device,
            )
        except (ValueError, FileNotFoundError) as exc:
            if len(jobs) == 1:
                raise
            failures += 1
            tqdm.write(f"ctblend: error: {source}: {_one_line(exc)}", file=sys.stderr)
            continue
        score = ""
        if metrics:
            score = f", axial PSNR {metrics['axial_psnr']:.2f} dB, SSIM {metrics['axial_ssim']:.3f}"
        tqdm.write(f"{tag}wrote {out} ({time.perf_counter() - start:.1f} s{score})")
    if failures:
        raise ValueError(f"{tag}{failures} of {len(mine)} inputs failed (see the lines above)")
    return 0


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def _with_overrides(config, overrides: dict[str, Any]):
    """Apply ``KEY=VALUE`` overrides; ``a.b=v`` sets field ``b`` of the nested config ``a``."""
    changes: dict[str, Any] = {}
    current = config.to_dict()
    for key, value in overrides.items():
        top, _, sub = key.partition(".")
        if top not in current:
            raise ValueError(f"unknown training option {top!r}; known: {', '.join(current)}")
        if sub:
            if not isinstance(current[top], dict) or sub not in current[top]:
                raise ValueError(f"unknown training option {key!r}")
            nested = dict(changes.get(top, current[top]))
            nested[sub] = value
            changes[top] = nested
        else:
            changes[top] = value
    try:
        return config.replace(**changes) if changes else config
    except TypeError as exc:
        raise ValueError(f"training options {overrides}: {exc}") from None


def _limit_steps(phases, steps: int) -> list[dict]:
    """The phases cut (or the last one extended) to ``steps`` steps in total."""
    out, left = [], steps
    for phase in phases:
        if left <= 0:
            break
        take = min(phase.steps, left)
        out.append({**dataclasses.asdict(phase), "steps": take})
        left -= take
    out[-1]["steps"] += left
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from ctblend.training import load_config, train
    from ctblend.training.data import training_datasets, training_files

    data, data_overrides = _split_items(args.data)  # --data A B key=v: nargs="+" takes all
    paths, overrides = _split_items(args.items)
    overrides = {**data_overrides, **overrides}
    if paths:
        raise ValueError(f"unexpected arguments {paths}; overrides look like KEY=VALUE")
    if not data:
        raise ValueError("--data: no volumes given; expected HDF5 files or one folder")
    config = load_config(args.config)
    if args.kind:
        config = _with_overrides(config, {"kind": args.kind})
    config = _with_overrides(config, overrides)
    fixed = {}
    if args.steps:
        fixed["phases"] = _limit_steps(config.phases, args.steps)
    if args.device:
        fixed["device"] = args.device
    if args.seed is not None:
        fixed["seed"] = args.seed
    if args.init_from:
        fixed["init_from"] = args.init_from
    config = _with_overrides(config, fixed)
    files = training_files(data)
    dataset, validation = training_datasets(config, files)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if main_rank:
        print(
            f"training a {config.kind!r} prior at {config.image_size}² for "
            f"{config.total_steps} steps on {len(files)} volume(s) "
            f"({len(dataset)} samples per epoch) into {args.out}"
        )
    result = train(
        config,
        dataset,
        args.out,
        resume=not args.no_resume,
        progress=_progress(args),
        validation=validation,
    )
    if main_rank:
        loss = "n/a" if result.last_loss is None else f"{result.last_loss:.4f}"
        print(
            f"checkpoint {result.checkpoint} after {result.steps} steps "
            f"({result.wall_time_s:.0f} s, last loss {loss}); "
            f"loss curve {Path(args.out) / 'loss.png'}"
        )
    return 0


# ---------------------------------------------------------------------------------------------
# sample
# ---------------------------------------------------------------------------------------------


class _CountingPrior:
    """A VolumePrior that advances a progress bar at every ε evaluation."""

    def __init__(self, prior, bar):
        self.prior, self.bar = prior, bar
        self.kind, self.image_size = prior.kind, prior.image_size
        self.schedule = prior.schedule

    def eps(self, x_t, t, step, generator=None):
        out = self.prior.eps(x_t, t, step, generator=generator)
        self.bar.update(1)
        return out


def _cmd_sample(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ctblend.data.scaling import unit_to_hu
    from ctblend.demo import hu_window, resolve_prior, shipped_prior
    from ctblend.figures import plot_panels
    from ctblend.geometry_config import write_arrays
    from ctblend.priors.base import precision_options
    from ctblend.priors.loading import load_prior, read_spec
    from ctblend.priors.unconditional import sample_unconditional

    if args.prior:
        path = resolve_prior(args.prior)
    else:
        path = shipped_prior()
        if path is None:
            raise ValueError("no shipped prior is installed: pass --prior CHECKPOINT")
    out = _check_output(Path(args.out))
    device = _device(args.device)
    prior = load_prior(path, device=device, **precision_options(args.precision, device))
    spec = read_spec(path)
    shape = (args.n_slices, prior.image_size, prior.image_size)
    seed = args.seed or 0
    with tqdm(total=args.nfe, desc="sampling", unit="step", disable=not _progress(args)) as bar:
        volume = sample_unconditional(_CountingPrior(prior, bar), shape, args.nfe, args.eta, seed)
    spacing = tuple(args.spacing)
    attrs = {
        "kind": "ctblend-sample",
        "prior": str(path),
        "prior_kind": spec.kind,
        "prior_steps": spec.steps,
        "nfe": args.nfe,
        "eta": args.eta,
        "seed": seed,
        "spacing_note": "nominal voxel size (the prior does not know it)",
    }
    png = out.with_suffix(".png")
    with _removed_on_error(png, out):
        plot_panels(
            {"sample": volume},
            png,
            window=hu_window(*DEFAULT_WINDOW_HU),
            spacing=spacing,
            title=f"unconditional sample — {path.name}, {args.nfe} steps, seed {seed}",
        )
        write_arrays(out, {"hu": unit_to_hu(volume).numpy()}, spacing_mm=spacing, attrs=attrs)
    print(f"wrote {out} (HU volume {shape[0]}×{shape[1]}×{shape[2]}) and {png}")
    return 0


# ---------------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------------


def _info() -> dict[str, Any]:
    import importlib.metadata
    import platform

    import torch

    from ctblend.demo import weights_dir
    from operators.backends.astra import astra_available, astra_cuda_available

    versions = {"python": platform.python_version()}
    for name in (
        "ctblend",
        "torch",
        "numpy",
        "scipy",
        "h5py",
        "pydicom",
        "scikit-image",
        "matplotlib",
        "safetensors",
        "PyYAML",
        "tqdm",
        "astra-toolbox",
        "nibabel",
    ):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    has_astra = astra_available()
    priors = {}
    folder = weights_dir()
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if (path / "config.json").is_file():
            priors[path.name] = _shipped_summary(path)
    return {
        "platform": platform.platform(),
        "versions": versions,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": gpus,
        "backends": {
            "torch_sparse": "CPU" + (" + CUDA" if gpus else ""),
            "astra": ("CPU 2D" + (" + CUDA 2D/3D" if astra_cuda_available() else ", no CUDA"))
            if has_astra
            else None,
            "raymarch": "CPU" + (" + CUDA" if gpus else ""),
        },
        "shipped_priors": priors,
        "weights_dir": str(folder),
    }


def _shipped_summary(path: Path) -> dict[str, Any]:
    """Kind, image size, steps (and protocol) of a shipped prior or FBP-UNet folder."""
    from ctblend.baselines.fbp_unet import read_fbp_unet_spec
    from ctblend.priors.loading import read_spec

    try:
        spec = read_spec(path)
        return {"kind": spec.kind, "image_size": spec.image_size, "steps": spec.steps}
    except ValueError as prior_error:
        try:
            _, net = read_fbp_unet_spec(path)
        except ValueError:
            return {"error": _one_line(prior_error)}
        return {
            "kind": f"fbp-unet for {net.protocol}",
            "image_size": net.image_size,
            "steps": net.steps,
        }


def _cmd_info(args: argparse.Namespace) -> int:
    info = _info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    v = info["versions"]
    print(f"ctblend {v['ctblend']} — Python {v['python']} on {info['platform']}")
    print(
        "packages: "
        + ", ".join(f"{k} {val}" for k, val in v.items() if k not in ("ctblend", "python") and val)
    )
    missing = [k for k, val in v.items() if val is None]
    if missing:
        print("not installed: " + ", ".join(missing))
    gpu = ", ".join(info["gpus"]) if info["gpus"] else "none"
    print(
        f"GPU: {gpu}"
        + (f" (CUDA {info['cuda']})" if info["cuda"] else "")
        + f"; torch CPU threads: {info['torch_threads']}"
    )
    backends = info["backends"]
    print(
        f"operator backends: torch_sparse ({backends['torch_sparse']}), "
        f"astra ({backends['astra'] or 'not installed'}), raymarch ({backends['raymarch']})"
    )
    priors = info["shipped_priors"]
    if priors:
        for name, p in priors.items():
            detail = p.get("error") or f"{p['kind']}, {p['image_size']}², {p['steps']} steps"
            print(f"shipped network: {name} ({detail})")
    else:
        print(f"shipped networks: none installed in {info['weights_dir']}")
    return 0


# ---------------------------------------------------------------------------------------------
# Commands whose options live in their module: add_arguments(parser) and run(args)
# ---------------------------------------------------------------------------------------------

DELEGATED = {
    "bench": (
        "ctblend.bench",
        "benchmark tables (protocol × method × volume)",
        "Benchmark tables: protocol × method × volume, resumable (see docs/results.md).",
    ),
    "train-fbp-unet": (
        "ctblend.baselines.fbp_unet",
        "train the FBP-UNet baseline for one protocol",
        "Train an FBP-UNet (FBP slice → true slice) for one protocol.",
    ),
}


def _run_delegated(command: str, argv: list[str]) -> int:
    module_name, _, description = DELEGATED[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ValueError(
            f"the {command} command needs {module_name}, which this installation lacks"
        ) from None
    parser = _Parser(prog=f"ctblend {command}", description=description)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)) or 0)


# ---------------------------------------------------------------------------------------------
# Parser and entry point
# ---------------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, options_config: bool = True) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument("--device", help="auto (default: CUDA when available), cpu, cuda, cuda:N")
    group.add_argument("--seed", type=int, help="random seed (default 0)")
    group.add_argument(
        "--quiet", action="store_true", help="no progress bars (also when CI is set)"
    )
    if options_config:
        group.add_argument(
            "--config",
            metavar="FILE.yaml",
            help="YAML mapping of option defaults "
            "(keys are option names, e.g. 'nfe: 50'); command-line options win",
        )


def _precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="network precision (default auto: bf16 where the CPU/GPU has it natively, else "
        "fp32; fp32 is the reference; bf16 without native support runs fp32 and says so)",
    )


def _acquisition_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    group = parser.add_argument_group("acquisition (for volume inputs)")
    group.add_argument(
        "--protocol",
        help="svct4, svct6, svct8, lact90, … (+noise); "
        + (f"default {default}" if default else "needed for a volume input"),
    )
    group.add_argument(
        "--geometry",
        metavar="FILE.yaml",
        help="a 2D geometry in YAML "
        "(type, angles, det_count, det_spacing, src_orig, orig_det; see docs)",
    )
    group.add_argument("--noise", action="store_true", help="Poisson noise, I0 = 1e5 per bin")
    group.add_argument(
        "--scale",
        type=_scale,
        default="cpu128",
        help="in-plane size: cpu128 (default), paper256 or a number of pixels",
    )
    group.add_argument("--slices", type=_slice_range, metavar="A:B", help="use slices A … B-1")
    group.add_argument(
        "--phantom-slices",
        type=_positive_int,
        default=36,
        metavar="N",
        help="slices of the procedural phantom (input 'phantom'; default 36)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``ctblend`` argument parser (``bench``'s own options come from ``ctblend.bench``)."""
    parser = _Parser(
        prog="ctblend",
        description="Sparse-view and limited-angle 3D CT reconstruction with DiffusionBlend++.",
        epilog="Run 'ctblend COMMAND --help' for the options of a command. Docs: docs/index.md",
    )
    from importlib.metadata import PackageNotFoundError, version

    try:
        parser.add_argument("--version", action="version", version=f"ctblend {version('ctblend')}")
    except PackageNotFoundError:  # running from a source tree without installation
        pass
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    parser.set_defaults(subparsers=sub.choices)

    p = sub.add_parser(
        "demo",
        help="simulate 8-view CT of a real chest CT (or --volume) and compare methods",
        description="Simulate sparse-view CT of the shipped real chest-CT excerpt (or --volume, "
        "--phantom), reconstruct with FBP, SIRT, TV, FBP-UNet and DiffusionBlend++ (when shipped), "
        "print PSNR/SSIM and write a figure and an HDF5 file.",
    )
    p.add_argument(
        "--volume",
        metavar="PATH",
        help="a DICOM folder or volume file (default: the shipped chest-CT excerpt)",
    )
    p.add_argument(
        "--phantom", action="store_true", help="use the procedural phantom instead of real CT"
    )
    p.add_argument(
        "--slices",
        type=_slice_range,
        metavar="A:B",
        help="z range of --volume (default: the middle --n-slices slices)",
    )
    p.add_argument(
        "--n-slices", type=_positive_int, metavar="N", help="slices (default 32; 9 with --quick)"
    )
    p.add_argument(
        "--nfe", type=_positive_int, help="diffusion steps (default 50; 10 with --quick)"
    )
    p.add_argument("--quick", action="store_true", help="a shortened run (CI): 9 slices, 10 steps")
    _precision_option(p)
    p.add_argument(
        "--prior",
        metavar="PATH",
        help="DiffusionBlend++ checkpoint "
        "(default: the shipped ctblend/weights/blendpp_cpu128 if installed)",
    )
    p.add_argument("--protocol", default="svct8", help="measurement protocol (default svct8)")
    p.add_argument(
        "--size", type=_scale, default="cpu128", help="in-plane size (default cpu128 = 128)"
    )
    p.add_argument(
        "--methods", help="comma-separated subset of fbp,sirt,tv,fbp-unet,diffusionblend++"
    )
    p.add_argument(
        "--out",
        default="ctblend_demo",
        metavar="DIR",
        help="output folder (default ./ctblend_demo)",
    )
    _common(p)
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser(
        "simulate",
        help="volume + protocol/geometry → sinogram HDF5",
        description="Simulate measurements of a volume ('phantom' or a path) and write an HDF5 "
        "file with datasets 'sinogram' (Z, V, D) and 'truth' (Z, H, W, in (HU+1024)/4095 units), "
        "plus a PNG view of the sinogram.",
    )
    p.add_argument("volume", help="'phantom' or a DICOM folder / .h5 / .nii(.gz) / .npy(z) volume")
    _acquisition_options(p, default="svct8")
    p.add_argument("--no-truth", action="store_true", help="do not store the ground truth")
    p.add_argument("--out", metavar="FILE.h5", help="output file (default <volume>_<protocol>.h5)")
    _common(p)
    p.set_defaults(handler=_cmd_simulate)

    p = sub.add_parser(
        "recon",
        help="reconstruct a sinogram file or a volume + protocol → HDF5 + PNG",
        description="Reconstruct measurements (a file from 'ctblend simulate', or a volume with "
        "--protocol/--geometry) with one method. Writes dataset 'recon' with the method, config, "
        "seed, timings and (when the truth is known) metrics as attributes, and a PNG. "
        "With --inputs DIR every entry of DIR is reconstructed; under torchrun the entries are "
        "shared among the processes. Existing outputs are skipped.",
        epilog="KEY=VALUE items set method options, e.g. nfe=100 eta=0.85 cg_iters=5 "
        "partition=adjacency (diffusion methods), iterations=300 (sirt, tv), lam=0.02 (tv), "
        "filter=hann (fbp).",
    )
    p.add_argument(
        "items",
        nargs="*",
        metavar="INPUT | KEY=VALUE",
        help="the input file/folder and method options",
    )
    p.add_argument("--inputs", metavar="DIR", help="reconstruct every volume or sinogram in DIR")
    p.add_argument(
        "--method",
        default="fbp",
        help="fbp (default), sirt, tv, dds, dds2d, diffusionblend, diffusionblend++",
    )
    p.add_argument("--prior", metavar="PATH", help="checkpoint folder or shipped prior name")
    p.add_argument("--nfe", type=_positive_int, help="diffusion steps (default 200; dds 100)")
    _precision_option(p)
    p.add_argument("--overwrite", action="store_true", help="recompute existing outputs")
    p.add_argument(
        "--out",
        metavar="PATH",
        help="output file (default <input>_<method>.h5), or "
        "folder with --inputs (default <DIR>_<method>)",
    )
    _acquisition_options(p, default=None)
    _common(p)
    p.set_defaults(handler=_cmd_recon, options=None)

    p = sub.add_parser(
        "train",
        help="train a diffusion prior on CT volumes",
        description="Train a prior (kind blend++, blend or slice2d) with a preset or YAML config. "
        "A folder with MANIFEST.md contributes its train split. Resumes from --out.",
        epilog="KEY=VALUE items override config fields, e.g. batch_size=4 lr=1e-4 "
        "unet.base_channels=16. Several processes: torchrun --nproc_per_node N -m ctblend train …",
    )
    p.add_argument("items", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--kind", help="blend++ (DiffusionBlend++), blend or slice2d (DDS)")
    p.add_argument(
        "--config",
        default="cpu128",
        help="preset tiny, cpu128 (default), paper256, or a training YAML file",
    )
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="PATH",
        help="HDF5 volumes, or one folder (its MANIFEST train split, else all .h5)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (resumed if present)")
    p.add_argument("--steps", type=_positive_int, help="total steps (cuts or extends the phases)")
    p.add_argument("--no-resume", action="store_true", help="fail if --out already holds a run")
    p.add_argument(
        "--init-from",
        metavar="PRIOR_FOLDER",
        help="start from this prior: same kind (continue its weights) or a 2D one (widened)",
    )
    _common(p, options_config=False)
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser(
        "sample",
        help="draw an unconditional volume from a prior",
        description="Sample a (Z, H, W) volume from a prior by DDIM, blending its partitions. "
        "Writes dataset 'hu' (readable by ctblend's volume readers) and a PNG.",
    )
    p.add_argument("--prior", metavar="PATH", help="checkpoint (default: the shipped prior)")
    p.add_argument(
        "--n-slices", type=_positive_int, default=27, metavar="N", help="slices (default 27)"
    )
    p.add_argument("--nfe", type=_positive_int, default=100, help="DDIM steps (default 100)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM η (default 0: deterministic)")
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=(1.0, 1.0, 1.0),
        metavar=("DZ", "DY", "DX"),
        help="voxel size written to the file (mm)",
    )
    _precision_option(p)
    p.add_argument(
        "--out", default="sample.h5", metavar="FILE.h5", help="output (default sample.h5)"
    )
    _common(p)
    p.set_defaults(handler=_cmd_sample)

    for command, (_, summary, _) in DELEGATED.items():  # parsed by _run_delegated
        sub.add_parser(command, help=summary, add_help=False)

    p = sub.add_parser("info", help="versions, backends, GPU, shipped priors")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p, options_config=False)
    p.set_defaults(handler=_cmd_info)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; a ``--config FILE.yaml`` of option defaults is applied before a re-parse."""
    import yaml

    args = _parse_items(parser, argv)
    path = getattr(args, "config", None)
    if args.command == "train" or not path:
        return args
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"--config {path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of option names to values")
    sub = args.subparsers[args.command]
    dests = {a.dest for a in sub._actions if a.dest not in ("help", "config", "items")}  # noqa: SLF001
    defaults = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest == "options" and args.command == "recon" and isinstance(value, dict):
            defaults["options"] = value
        elif dest in dests:
            defaults[dest] = value
        else:
            raise ValueError(
                f"--config {path}: unknown option {key!r} for 'ctblend {args.command}'; "
                f"expected some of {', '.join(sorted(dests))}"
            )
    sub.set_defaults(**defaults)
    return _parse_items(parser, argv)


def _parse_items(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse with ``KEY=VALUE`` / input items allowed anywhere (after options too)."""
    args, extra = parser.parse_known_args(argv)
    sub = args.subparsers[args.command]
    unknown = [e for e in extra if e.startswith("-") or not hasattr(args, "items")]
    if unknown:
        sub.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.items = [*args.items, *extra]
    return args


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return " ".join(text.split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"ctblend: warning: {_one_line(Warning(str(message)))}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ctblend`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            if argv and argv[0] in DELEGATED:
                return _run_delegated(argv[0], argv[1:])
            args = _parse(build_parser(), argv)
            return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"ctblend: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctblend: interrupted", file=sys.stderr)
        return 130
