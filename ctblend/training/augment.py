"""Per-sample CT-plausible augmentation of a training batch (rotation, scaling, z reversal)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ctblend.training.config import Augment


def augment_batch(x: Tensor, aug: Augment, generator: torch.Generator) -> Tensor:
    """x: (B, C, H, W) in [0, 1] (0 = the lowest HU, air) → augmented (B, C, H, W).

    Random numbers come from ``generator`` (CPU), so a checkpointed run resumes exactly.
    Rotation and scaling resample all C slices of a sample alike (bilinear, air outside);
    z reversal flips the channel (slice) order.
    """
    b = x.shape[0]
    if aug.z_reverse and x.shape[1] > 1:
        rev = torch.rand(b, generator=generator) < 0.5
        x = torch.where(rev.view(b, 1, 1, 1).to(x.device), x.flip(1), x)
    if not aug.geometric:
        return x
    apply = torch.rand(b, generator=generator) < aug.prob
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(aug.rotate_deg)
    scale = 1 + (torch.rand(b, generator=generator) * 2 - 1) * aug.scale
    angle, scale = torch.where(apply, angle, 0.0), torch.where(apply, scale, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1
    ).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.where(apply.view(b, 1, 1, 1).to(x.device), out, x)
