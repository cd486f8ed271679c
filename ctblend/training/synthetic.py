"""A synthetic training set of smooth 3D blobs, for tests and smoke runs (no files needed)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ctblend.models.unet import KIND_CHANNELS


class BlobDataset(Dataset):
    """Items ``(x (C, size, size) in [0, 1], gap label)`` cut from random volumes of Gaussian
    blobs, in the format the real datasets use:

    blend++: 3 slices z−g, z, z+g with g = 1 or 3 (label g, chosen per item);
    blend: 3 adjacent slices, label 1; slice2d: 1 slice, label 0.
    Item i is a pure function of (seed, i).
    """

    def __init__(
        self,
        length: int,
        size: int,
        kind: str = "blend++",
        seed: int = 0,
        blobs: int = 3,
        radius: tuple[float, float] = (0.12, 0.3),
    ):
        if kind not in KIND_CHANNELS:
            raise ValueError(f"unknown prior kind {kind!r}; expected one of {list(KIND_CHANNELS)}")
        self.length, self.size, self.kind, self.seed = length, size, kind, seed
        self.blobs, self.radius = blobs, radius

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        rng = np.random.default_rng([self.seed, index])
        if self.kind == "blend++":
            gap = int(rng.choice([1, 3]))
        else:
            gap = 1 if self.kind == "blend" else 0
        offsets = np.array([0.0]) if self.kind == "slice2d" else np.array([-gap, 0.0, gap])
        z = offsets / self.size  # slices one voxel apart in units of the field of view
        yy, xx = np.meshgrid(
            np.linspace(0, 1, self.size), np.linspace(0, 1, self.size), indexing="ij"
        )
        out = np.zeros((len(z), self.size, self.size))
        for _ in range(self.blobs):
            c = rng.uniform(0.2, 0.8, size=2)
            cz = rng.uniform(-0.1, 0.1)
            r = rng.uniform(*self.radius)
            amp = rng.uniform(0.3, 0.7)
            d2 = (yy - c[0]) ** 2 + (xx - c[1]) ** 2
            out += amp * np.exp(-(d2[None] + (z[:, None, None] - cz) ** 2 * 64) / (2 * r**2))
        return torch.from_numpy(np.clip(out, 0.0, 1.0).astype(np.float32)), gap
