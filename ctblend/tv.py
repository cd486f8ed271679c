"""3D total-variation regularised least squares by Chambolle–Pock (PDHG) on any operator.

    min_x ½‖A x − y‖² + λ Σ_voxels ‖∇x‖₂   subject to  lo ≤ x ≤ hi

with ∇ the forward differences along (z, y, x) (zero at the far border, no wrap-around).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

import operators as ops


def gradient(x: Tensor) -> Tensor:
    """Forward differences ``(..., Z, H, W) → (3, ..., Z, H, W)``, zero past the last index."""
    out = torch.zeros((3, *x.shape), dtype=x.dtype, device=x.device)
    out[0, ..., :-1, :, :] = x[..., 1:, :, :] - x[..., :-1, :, :]
    out[1, ..., :, :-1, :] = x[..., :, 1:, :] - x[..., :, :-1, :]
    out[2, ..., :, :, :-1] = x[..., :, :, 1:] - x[..., :, :, :-1]
    return out


def gradient_adjoint(g: Tensor) -> Tensor:
    """Adjoint of ``gradient`` (minus the divergence): ``(3, ..., Z, H, W) → (..., Z, H, W)``."""
    out = torch.zeros_like(g[0])
    for axis, comp in zip((-3, -2, -1), g, strict=True):
        n = comp.shape[axis]
        head = comp.narrow(axis, 0, n - 1)
        out.narrow(axis, 0, n - 1).sub_(head)
        out.narrow(axis, 1, n - 1).add_(head)
    return out


def tv_least_squares(
    A: ops.Operator,
    y: Tensor,
    lam: float = 0.01,
    iterations: int = 200,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    x0: Tensor | None = None,
    callback: Callable[[int, Tensor], object] | None = None,
) -> Tensor:
    """PDHG iterations for the problem above, every batch item of ``y``
    ``(..., *A.range_shape)`` on its own; returns ``(..., *A.domain_shape)``.
    ``callback(k, x)`` is called after iteration ``k`` (e.g. for progress)."""
    if len(A.domain_shape) != 3:
        raise ValueError(
            f"tv_least_squares needs a (Z, H, W) operator domain, got {A.domain_shape}"
        )
    norm = math.sqrt(A.norm(iterations=20, dtype=y.dtype, device=y.device) ** 2 + 12.0)
    tau = sigma = 0.99 / norm
    batch = y.shape[: y.ndim - len(A.range_shape)]
    shape = (*batch, *A.domain_shape)
    x = (
        torch.zeros(shape, dtype=y.dtype, device=y.device)
        if x0 is None
        else x0.expand(shape).clone()
    )
    x_bar = x.clone()
    p = torch.zeros_like(y)
    q = torch.zeros((3, *shape), dtype=y.dtype, device=y.device)
    for k in range(iterations):
        p = (p + sigma * (A(x_bar) - y)) / (1 + sigma)
        q = q + sigma * gradient(x_bar)
        magnitude = torch.linalg.vector_norm(q, dim=0, keepdim=True)
        q = q / torch.clamp(magnitude / lam, min=1.0) if lam > 0 else torch.zeros_like(q)
        x_new = x - tau * (A.T(p) + gradient_adjoint(q))
        if bounds is not None:
            x_new = x_new.clamp(*bounds)
        x_bar = 2 * x_new - x
        x = x_new
        if callback is not None:
            callback(k, x)
    return x
