"""DiffusionBlend prior (j = 1): ε of each slice from the noisy window (i−1, i, i+1)."""

from __future__ import annotations

import torch
from torch import Tensor

from ctblend.priors.base import SliceWisePrior
from ctblend.priors.partitions import ADJACENT_LABEL


def neighbour_windows(x: Tensor) -> Tensor:
    """(Z, H, W) → (Z, 3, H, W) windows (i−1, i, i+1) with edge (repetition) padding."""
    idx = torch.arange(x.shape[0], device=x.device)
    lo = (idx - 1).clamp(min=0)
    hi = (idx + 1).clamp(max=x.shape[0] - 1)
    return torch.stack([x[lo], x, x[hi]], dim=1)


class BlendPrior(SliceWisePrior):
    """``eps(x_t, t, step)``: every slice's ε from its noisy neighbours, windows batched."""

    kind = "blend"
    label = ADJACENT_LABEL

    def inputs(self, x_t: Tensor) -> Tensor:
        return neighbour_windows(x_t)
