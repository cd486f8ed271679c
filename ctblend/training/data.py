"""The datasets of a training run: the training items and the held-out validation slab."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ctblend.data.datasets import SliceDataset, SliceGroupDataset, WindowDataset
from ctblend.data.splits import manifest_split
from ctblend.training.config import TrainConfig

_DATASETS = {"blend++": SliceGroupDataset, "blend": WindowDataset, "slice2d": SliceDataset}


def training_files(items: Sequence[str | os.PathLike]) -> list[Path]:
    """The training volumes of ``--data``: HDF5 files, or one folder (its MANIFEST.md train
    split, else every ``.h5`` in it); one clear error when there are none or a file is missing."""
    paths = [Path(p) for p in items]
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        if (folder / "MANIFEST.md").is_file():
            files = manifest_split(folder)["train"]
        else:
            files = sorted(folder.glob("*.h5"))
        if not files:
            raise ValueError(
                f"--data {folder}: no training volumes (.h5 or a MANIFEST train split)"
            )
        return files
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"--data {path}: no such file (expected HDF5 volumes or one folder)"
            )
    return paths


def training_datasets(
    config: TrainConfig, files: Sequence[str | os.PathLike]
) -> tuple[Dataset, tuple[torch.Tensor, torch.Tensor] | None]:
    """(training dataset, validation samples or None) for ``config.kind`` over ``files``.

    With ``config.holdout = h`` the top fraction h of every volume (its superior slices) is the
    validation slab and training items come from the rest only. The validation samples are
    ``(x (N, C, S, S) in [0, 1], gap labels (N,))``: ``val_samples`` items spread evenly over the
    slab, whole slices, no flips, fixed for the run.
    """
    cls = _DATASETS[config.kind]
    common = {"scale": config.image_size, "seed": config.seed}
    if config.holdout <= 0:
        return cls(files, flips=True, **common), None
    cut = 1.0 - config.holdout
    train = cls(files, flips=True, z_range=(0.0, cut), **common)
    slab = cls(files, flips=False, z_range=(cut, 1.0), **common)
    picks = np.linspace(0, len(slab) - 1, min(config.val_samples, len(slab))).round().astype(int)
    items = [slab[int(i)] for i in picks]
    slab.close()
    x = torch.stack([item[0] for item in items])
    labels = torch.tensor([int(item[1]) for item in items])
    return train, (x, labels)
