"""DiffusionBlend prior (j = 1): ε of each slice from the noisy window (i−1, i, i+1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctblend.diffusion import VPSchedule
from ctblend.priors.base import BatchedNetwork, InferenceOptions, check_volume
from ctblend.priors.partitions import ADJACENT_LABEL


def neighbour_windows(x: Tensor) -> Tensor:
    """(Z, H, W) → (Z, 3, H, W) windows (i−1, i, i+1) with edge (repetition) padding."""
    idx = torch.arange(x.shape[0], device=x.device)
    lo = (idx - 1).clamp(min=0)
    hi = (idx + 1).clamp(max=x.shape[0] - 1)
    return torch.stack([x[lo], x, x[hi]], dim=1)


class BlendPrior:
    """``eps(x_t, t, step)``: every slice's ε from its noisy neighbours, windows batched."""

    kind = "blend"

    def __init__(
        self,
        model: nn.Module,
        image_size: int,
        schedule: VPSchedule | None = None,
        options: InferenceOptions | None = None,
    ):
        self.image_size = image_size
        self.schedule = schedule or VPSchedule()
        self.net = BatchedNetwork(model, options or InferenceOptions())

    def eps(
        self, x_t: Tensor, t: int, step: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """x_t: (Z, H, W), Z >= 1 → ε (Z, H, W); ``step`` and ``generator`` are unused."""
        check_volume(x_t, self.image_size)
        return self.net(neighbour_windows(x_t), t, ADJACENT_LABEL)[:, 0].to(x_t.dtype)
