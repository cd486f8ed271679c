"""The datasets of a training run: the training items and the held-out validation slab."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ctblend.data.datasets import SliceDataset, SliceGroupDataset, WindowDataset
from ctblend.training.config import TrainConfig

_DATASETS = {"blend++": SliceGroupDataset, "blend": WindowDataset, "slice2d": SliceDataset}


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
