"""VP diffusion schedule: ᾱ, forward noising, Tweedie's x̂0, DDIM timesteps and steps.

Conventions (DDPM, Ho et al. 2020): x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε with integer t ∈ {0, …, T−1},
ᾱ_t = ∏_{s ≤ t} (1 − β_s), β linear from ``beta_start`` to ``beta_end``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

import torch
from torch import Tensor

from ctblend.config_io import from_dict


@dataclass(frozen=True)
class VPSchedule:
    """Variance-preserving schedule with linear β (defaults: 1e-4 → 0.02, T = 1000)."""

    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_timesteps: int = 1000

    def __post_init__(self) -> None:
        if self.num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {self.num_timesteps}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}"
            )

    @cached_property
    def betas(self) -> Tensor:
        """(T,) float64."""
        return torch.linspace(
            self.beta_start, self.beta_end, self.num_timesteps, dtype=torch.float64
        )

    @cached_property
    def alphas_cumprod(self) -> Tensor:
        """ᾱ_t, (T,) float64."""
        return torch.cumprod(1.0 - self.betas, dim=0)

    def alpha_bar(self, t: int | Tensor) -> Tensor:
        """ᾱ_t for an int (0-d tensor) or a (B,) tensor of timesteps; float64 on t's device."""
        t = torch.as_tensor(t)
        self._check_t(t)
        return self.alphas_cumprod.to(t.device)[t.long()]

    def _check_t(self, t: Tensor) -> None:
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(f"timesteps must lie in [0, {self.num_timesteps - 1}], got {t}")

    def _coeffs(self, t: int | Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """√ᾱ_t and √(1 − ᾱ_t) broadcastable against ``like`` (leading batch dim if t is (B,))."""
        a = self.alpha_bar(torch.as_tensor(t, device=like.device))
        if a.ndim == 1:
            a = a.reshape(-1, *([1] * (like.ndim - 1)))
        return a.sqrt().to(like.dtype), (1.0 - a).sqrt().to(like.dtype)

    def q_sample(self, x0: Tensor, t: int | Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε. x0, noise: (B, …); t: int or (B,)."""
        sa, s1a = self._coeffs(t, x0)
        return sa * x0 + s1a * noise

    def tweedie_x0(self, x_t: Tensor, eps: Tensor, t: int | Tensor) -> Tensor:
        """Tweedie's estimate x̂0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t."""
        sa, s1a = self._coeffs(t, x_t)
        return (x_t - s1a * eps) / sa

    def eps_from_x0(self, x_t: Tensor, x0: Tensor, t: int | Tensor) -> Tensor:
        """The ε consistent with x_t and x0: (x_t − √ᾱ_t x0) / √(1 − ᾱ_t)."""
        sa, s1a = self._coeffs(t, x_t)
        return (x_t - sa * x0) / s1a

    def ddim_timesteps(self, nfe: int) -> list[int]:
        """Descending timesteps for ``nfe`` network evaluations, evenly spaced from 0.

        T = 1000, nfe = 200 gives 995, 990, …, 5, 0 (the reference sampler's sequence).
        """
        if not 1 <= nfe <= self.num_timesteps:
            raise ValueError(f"nfe={nfe}; expected an integer in [1, {self.num_timesteps}]")
        steps = torch.floor(torch.arange(nfe, dtype=torch.float64) * self.num_timesteps / nfe)
        return [int(s) for s in steps.flip(0)]

    def ddim_step(
        self,
        x0_hat: Tensor,
        eps: Tensor,
        t_next: int | None,
        eta: float,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Move to timestep ``t_next`` (``None`` = the end: return x̂0).

        x_{t'} = √ᾱ_{t'} x̂0 + √(1 − ᾱ_{t'}) (η z + √(1 − η²) ε), z ~ N(0, I): the DDS /
        DiffusionBlend convention, where η = 0 is deterministic DDIM and η = 1 re-noises x̂0
        with fresh noise. ``noise`` (z) is required when η > 0.
        """
        if t_next is None:
            return x0_hat
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        direction = eps
        if eta > 0:
            if noise is None:
                raise ValueError("ddim_step with eta > 0 needs a noise tensor")
            direction = eta * noise + (1.0 - eta**2) ** 0.5 * eps
        sa, s1a = self._coeffs(t_next, x0_hat)
        return sa * x0_hat + s1a * direction

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> VPSchedule:
        return from_dict(cls, data, "schedule keys")
