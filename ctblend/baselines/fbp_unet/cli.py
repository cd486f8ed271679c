"""``ctblend train-fbp-unet`` / ``python -m ctblend.baselines.fbp_unet`` options."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ctblend.baselines.fbp_unet.config import FBPUNetTrainConfig
from ctblend.baselines.fbp_unet.model import export_fbp_unet
from ctblend.baselines.fbp_unet.train import train_fbp_unet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ctblend train-fbp-unet`` (also ``python -m ctblend.baselines.fbp_unet``)."""
    parser.add_argument("--protocol", required=True, help="svct8, svct6, svct4, lact90 (+noise)")
    parser.add_argument("--files", nargs="*", default=[], help="training HDF5 volumes")
    parser.add_argument(
        "--ct-dir", help="a CT folder with MANIFEST.md: its 'train' volumes are used"
    )
    parser.add_argument("--out", required=True, help="run folder (resumed when it exists)")
    parser.add_argument("--steps", type=int, required=True, help="total optimiser steps")
    parser.add_argument("--config", help="FBPUNetTrainConfig YAML (other knobs)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--export", help="also write a float16 network folder here")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")


def run(args: argparse.Namespace) -> int:
    """Train from parsed arguments; print where the network is."""
    from ctblend.data.splits import manifest_split

    files = [Path(f) for f in args.files]
    if args.ct_dir:
        files += manifest_split(args.ct_dir)["train"]
    if not files:
        raise ValueError("no training files: give --files and/or --ct-dir")
    config = FBPUNetTrainConfig.from_yaml(args.config) if args.config else FBPUNetTrainConfig()
    if args.threads is not None:
        config = replace(config, threads=args.threads)
    command = getattr(args, "command", None)
    summary = train_fbp_unet(
        args.protocol, files, args.out, args.steps, config, command=command, progress=args.progress
    )
    print(
        f"{summary.checkpoint}: {summary.steps} steps, final loss {summary.final_loss:.4g}, "
        f"{summary.wall_time_s:.0f} s"
    )
    if args.export:
        print(f"exported {export_fbp_unet(summary.checkpoint, args.export)}")
    return 0
