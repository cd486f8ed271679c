"""Data-consistency strategies applied to Tweedie's x̂0 at every sampling step.

Each strategy maps x̂0 (in measurement units, ``(..., Z, H, W)`` in [0, 1]; leading axes are
independent samples) to a data-consistent volume. State that must persist across steps (ADMM's
split variable and dual) lives in the strategy object, never in the sampler; ``reset()`` clears
it before a new reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

import operators as ops


class DataConsistency(Protocol):
    """``dc(x0_hat, A, y) -> x`` with ``x0_hat`` and ``x`` of shape ``A.domain_shape``."""

    def reset(self) -> None: ...

    def __call__(self, x0_hat: Tensor, A: ops.Operator, y: Tensor) -> Tensor: ...


def diff_z(x: Tensor) -> Tensor:
    """Forward difference along slices, no wrap-around: ``(..., Z, H, W) → (..., Z−1, H, W)``."""
    return x[..., 1:, :, :] - x[..., :-1, :, :]


def diff_z_adjoint(d: Tensor) -> Tensor:
    """Adjoint of ``diff_z``: ``(..., Z−1, H, W) → (..., Z, H, W)``."""
    zero = torch.zeros_like(d[..., :1, :, :])
    return torch.cat([zero, d], dim=-3) - torch.cat([d, zero], dim=-3)


@dataclass
class CGConsistency:
    """``iterations`` CG steps on ``AᵀA x = Aᵀy`` warm-started at x̂0.

    ``per_slice=False`` uses inner products over the whole volume (one global solve, as the
    reference code does); ``True`` solves every slice independently.
    """

    iterations: int = 5
    per_slice: bool = False

    def reset(self) -> None:
        """No state."""

    def __call__(self, x0_hat: Tensor, A: ops.Operator, y: Tensor) -> Tensor:
        return ops.cg(A, y, self.iterations, x0=x0_hat, reduce_dims=2 if self.per_slice else None)


@dataclass
class NoiseAwareConsistency:
    """Proximal step for noisy data: solve ``(I + γ AᵀA) x = x̂0 + γ Aᵀy`` by CG.

    Small ``gamma`` trusts the prior, large ``gamma`` the measurements.
    """

    gamma: float = 1.0
    iterations: int = 5

    def __post_init__(self) -> None:
        if not self.gamma > 0:
            raise ValueError(
                f"noise-aware consistency: gamma={self.gamma!r}; expected a number > 0"
            )

    def reset(self) -> None:
        """No state."""

    def __call__(self, x0_hat: Tensor, A: ops.Operator, y: Tensor) -> Tensor:
        inv = 1.0 / self.gamma
        return ops.cg(
            A, y, self.iterations, x0=x0_hat, regularizer=lambda v: inv * v, rhs_extra=inv * x0_hat
        )


@dataclass
class ADMMTVz:
    """ADMM on ``½‖Ax − y‖² + λ‖D_z x‖₁`` at every step (DDS's data consistency).

    One ADMM iteration: ``iterations`` CG steps on ``(AᵀA + ρ D_zᵀD_z) x = Aᵀy + ρ D_zᵀ(z − w)``
    warm-started at the current x, then ``z = soft(D_z x + w, λ/ρ)`` and ``w += D_z x − z``.
    ``D_z`` is the non-circular slice difference (the reference code wraps the last slice to the
    first). The split variable and the scaled dual start at zero.

    Each call (diffusion step) runs ``admm_iterations`` ADMM iterations from x̂0. Default
    (``persistent=False``): from a fresh state ``z = 0, w = 0``, so every step is a bounded,
    approximate TV-z-regularised least-squares fit started at the prior's estimate.
    ``persistent=True`` carries z and w across steps; with ``admm_iterations=1`` that is the DDS
    code. With our CPU-trained priors the carried dual integrates the mismatch between the
    prior's estimate and z and diverged at 4 and 6 views (docs/results.md); the per-step restart
    was stable and more accurate there.
    """

    rho: float = 10.0
    lam: float = 0.04
    iterations: int = 5
    admm_iterations: int = 3
    persistent: bool = False
    z: Tensor | None = field(default=None, repr=False)
    w: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.rho < 0 or self.lam < 0:
            raise ValueError(f"rho and lam must be >= 0, got rho={self.rho}, lam={self.lam}")
        if self.admm_iterations < 1:
            raise ValueError(f"admm_iterations must be >= 1, got {self.admm_iterations}")

    def reset(self) -> None:
        self.z = self.w = None

    def __call__(self, x0_hat: Tensor, A: ops.Operator, y: Tensor) -> Tensor:
        if self.rho == 0:  # no coupling along z: plain CG, i.e. DDS-2D
            return ops.cg(A, y, self.iterations, x0=x0_hat)
        if self.z is None or not self.persistent:  # shaped like D_z x: one slice fewer than x
            self.z = torch.zeros_like(diff_z(x0_hat))
            self.w = torch.zeros_like(self.z)
        x = x0_hat
        for _ in range(self.admm_iterations):
            x = self._iteration(x, A, y)
        return x

    def _iteration(self, x: Tensor, A: ops.Operator, y: Tensor) -> Tensor:
        rho = self.rho
        x = ops.cg(
            A,
            y,
            self.iterations,
            x0=x,
            regularizer=lambda v: rho * diff_z_adjoint(diff_z(v)),
            rhs_extra=rho * diff_z_adjoint(self.z - self.w),
        )
        dx = diff_z(x)
        v = dx + self.w
        threshold = self.lam / rho
        self.z = torch.sign(v) * (v.abs() - threshold).clamp_min(0)
        self.w = self.w + dx - self.z
        return x
