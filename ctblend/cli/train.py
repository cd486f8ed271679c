"""``ctblend train``: train a diffusion prior on CT volumes (also under ``torchrun``)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from . import common

HELP = "train a diffusion prior on CT volumes"
DESCRIPTION = (
    "Train a prior (kind blend++, blend or slice2d) with a preset or YAML config. "
    "A folder with MANIFEST.md contributes its train split. Resumes from --out."
)
EPILOG = (
    "KEY=VALUE items override config fields, e.g. batch_size=4 lr=1e-4 "
    "unet.base_channels=16. Several processes: torchrun --nproc_per_node N -m ctblend train …"
)


def add_arguments(p) -> None:
    """The options of ``ctblend train``."""
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
    p.add_argument(
        "--steps", type=common.positive_int, help="total steps (cuts or extends the phases)"
    )
    p.add_argument("--no-resume", action="store_true", help="fail if --out already holds a run")
    p.add_argument(
        "--init-from",
        metavar="PRIOR_FOLDER",
        help="start from this prior: same kind (continue its weights) or a 2D one (widened)",
    )
    common.add_common(p, options_config=False)


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


def run(args: argparse.Namespace) -> int:
    from ctblend.io.output import check_writable
    from ctblend.training import load_config, train
    from ctblend.training.data import training_datasets, training_files

    data, data_overrides = common.split_items(args.data)  # --data A B key=v: nargs="+" takes all
    paths, overrides = common.split_items(args.items)
    overrides = {**data_overrides, **overrides}
    if paths:
        raise ValueError(f"unexpected arguments {paths}; overrides look like KEY=VALUE")
    if not data:
        raise ValueError("--data: no volumes given; expected HDF5 files or one folder")
    check_writable(args.out)
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
        progress=common.progress(args),
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
