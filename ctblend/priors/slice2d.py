"""2D prior (DDS): ε of each slice on its own."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctblend.diffusion import VPSchedule
from ctblend.priors.base import BatchedNetwork, InferenceOptions, check_volume

SLICE2D_LABEL = 0


class Slice2DPrior:
    """``eps(x_t, t, step)``: slice-wise 1-in/1-out network, slices batched."""

    kind = "slice2d"

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
        """x_t: (Z, H, W) → ε (Z, H, W); ``step`` and ``generator`` are unused."""
        check_volume(x_t, self.image_size)
        return self.net(x_t[:, None], t, SLICE2D_LABEL)[:, 0].to(x_t.dtype)
