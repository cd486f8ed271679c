"""2D prior (DDS): ε of each slice on its own."""

from __future__ import annotations

from torch import Tensor

from ctblend.priors.base import SliceWisePrior

SLICE2D_LABEL = 0


class Slice2DPrior(SliceWisePrior):
    """``eps(x_t, t, step)``: slice-wise 1-in/1-out network, slices batched."""

    kind = "slice2d"
    label = SLICE2D_LABEL

    def inputs(self, x_t: Tensor) -> Tensor:
        return x_t[:, None]
