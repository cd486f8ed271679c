"""Validation ε-MSE at fixed noise and fixed timesteps, on samples no training step sees."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctblend.diffusion import VPSchedule


class Validator:
    """ε-MSE of a network on fixed samples at fixed timesteps with fixed noise.

    samples: (x (N, C, H, W) in [0, 1], gap labels (N,)); target: "all" channels or the
    "middle" one (DiffusionBlend). The noise is drawn once from ``seed``, so successive
    evaluations of a run differ only through the network.
    """

    def __init__(
        self,
        samples: tuple[Tensor, Tensor],
        schedule: VPSchedule,
        timesteps: tuple[int, ...],
        target: str,
        seed: int = 1234,
        batch: int = 8,
    ):
        x, self.labels = samples
        self.x0 = x.float() * 2.0 - 1.0
        self.timesteps = tuple(timesteps)
        gen = torch.Generator().manual_seed(seed)
        self.noise = torch.randn((len(self.timesteps), *self.x0.shape), generator=gen)
        self.schedule = schedule
        self.middle = target == "middle"
        self.batch = batch

    @torch.no_grad()
    def __call__(self, net: nn.Module) -> dict[int, float]:
        """{timestep: mean ε-MSE over the samples}; ``net`` is used in eval mode, then restored."""
        was_training = net.training
        net.eval()
        device = next(net.parameters()).device
        out: dict[int, float] = {}
        try:
            for k, t in enumerate(self.timesteps):
                total = 0.0
                for s in range(0, len(self.x0), self.batch):
                    x0, eps = self.x0[s : s + self.batch], self.noise[k, s : s + self.batch]
                    x_t = self.schedule.q_sample(x0, t, eps).to(device)
                    tt = torch.full((len(x0),), t, device=device)
                    pred = net(x_t, tt, self.labels[s : s + self.batch].to(device)).float().cpu()
                    target = eps[:, 1:2] if self.middle else eps
                    total += float(((pred - target) ** 2).mean(dim=(1, 2, 3)).sum())
                out[t] = total / len(self.x0)
        finally:
            net.train(was_training)
        return out
