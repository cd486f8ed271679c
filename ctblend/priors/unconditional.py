"""Unconditional DDIM sampling from a prior: the check that it has learned anatomy."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ctblend.diffusion import VPSchedule
from ctblend.priors.base import VolumePrior
from ctblend.priors.blendpp import BlendPPPrior


def _ddim_loop(
    eps_fn: Callable[[Tensor, int, int], Tensor],
    shape: tuple[int, ...],
    schedule: VPSchedule,
    nfe: int,
    eta: float,
    generator: torch.Generator,
) -> Tensor:
    x = torch.randn(shape, generator=generator)
    timesteps = schedule.ddim_timesteps(nfe)
    for step, t in enumerate(timesteps):
        eps = eps_fn(x, t, step)
        x0 = schedule.tweedie_x0(x, eps, t).clamp(-1.0, 1.0)
        t_next = timesteps[step + 1] if step + 1 < len(timesteps) else None
        noise = torch.randn(shape, generator=generator) if eta > 0 and t_next is not None else None
        x = schedule.ddim_step(x0, eps, t_next, eta, noise)
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def sample_unconditional(
    prior: VolumePrior,
    shape: tuple[int, int, int],
    nfe: int = 100,
    eta: float = 0.0,
    seed: int = 0,
    schedule: VPSchedule | None = None,
) -> Tensor:
    """A whole (Z, H, W) volume from pure noise, blending the prior's partitions.

    DDIM with ``nfe`` steps (η as in VPSchedule.ddim_step; 0 = deterministic). Returns the
    volume in [0, 1] (CPU, float32). ``schedule`` defaults to the prior's own.
    """
    schedule = schedule or getattr(prior, "schedule", None) or VPSchedule()
    gen = torch.Generator().manual_seed(seed)
    return _ddim_loop(
        lambda x, t, step: prior.eps(x, t, step, generator=gen), shape, schedule, nfe, eta, gen
    )


def sample_patch(
    prior: BlendPPPrior,
    num: int = 1,
    label: int = 1,
    nfe: int = 100,
    eta: float = 0.0,
    seed: int = 0,
) -> Tensor:
    """``num`` independent 3-slice patches with slice gap ``label`` (1 or 3) from a blend++ prior.

    Returns (num, 3, H, W) in [0, 1], H = W = the prior's image size.
    """
    if not isinstance(prior, BlendPPPrior):
        raise ValueError(f"sample_patch needs a blend++ prior, got {type(prior).__name__}")
    size = prior.image_size
    gen = torch.Generator().manual_seed(seed)
    return _ddim_loop(
        lambda x, t, step: prior.eps_groups(x, t, label),
        (num, 3, size, size),
        prior.schedule,
        nfe,
        eta,
        gen,
    )
