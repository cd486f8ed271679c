"""Iterative solvers on any ``Operator``: conjugate gradient on the normal equations, SIRT.

One algorithm, one function; the device and dtype follow the data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .operator import Operator

Callback = Callable[[int, torch.Tensor], bool | None]


def _check_same_device(**tensors: torch.Tensor | None) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        found = ", ".join(f"{k} on {v}" for k, v in devices.items())
        raise ValueError(f"tensors are on different devices: {found}")


def cg(
    A: Operator,
    y: torch.Tensor,
    iterations: int,
    x0: torch.Tensor | None = None,
    *,
    reduce_dims: int | None = None,
    regularizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rhs_extra: torch.Tensor | None = None,
    callbacks: Sequence[Callback] = (),
) -> torch.Tensor:
    """``iterations`` CG steps on ``(AᵀA + R) x = Aᵀy + b``, warm-started at ``x0``.

    Args:
        A: the operator; ``y`` has shape ``(..., *A.range_shape)``.
        x0: start ``(..., *A.domain_shape)`` (zeros if None).
        reduce_dims: how many trailing axes each inner product spans. ``None`` = the operator's
            domain, so every batch item of ``y`` is an independent problem, as ``A(x)`` treats
            it (a ``(Z, H, W)`` volume is one global solve, as DiffusionBlend does); e.g. ``2``
            with a slice-wise operator gives an independent solve per slice.
        regularizer: optional symmetric positive semi-definite ``R(x)`` added to ``AᵀA x``.
        rhs_extra: optional ``b`` added to the right-hand side.
        callbacks: called as ``cb(k, x)`` after each step; returning True stops early.
    Returns ``x`` ``(..., *A.domain_shape)``.
    """
    _check_same_device(y=y, x0=x0, rhs_extra=rhs_extra)
    if iterations < 0:
        raise ValueError(f"iterations: expected a non-negative integer, got {iterations}")
    span = len(A.domain_shape) if reduce_dims is None else reduce_dims
    if not 1 <= span <= len(A.domain_shape):
        raise ValueError(
            f"reduce_dims: expected 1 to {len(A.domain_shape)} trailing axes, got {reduce_dims}"
        )
    dims = tuple(range(-span, 0))

    if A.check_finite:  # once here and once per step, not at every product (a sync on CUDA)
        for name, t in (("y", y), ("x0", x0), ("rhs_extra", rhs_extra)):
            if t is not None and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name}: contains NaN or inf values")
    check_steps, A = A.check_finite, A.unchecked()

    def normal(v):
        out = A.T(A(v))
        return out + regularizer(v) if regularizer is not None else out

    def dot(a, b):
        return torch.sum(a * b, dim=dims, keepdim=True)

    b = A.T(y)
    if rhs_extra is not None:
        b = b + rhs_extra
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - normal(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = dot(r, r)
    for k in range(iterations):
        q = normal(p)
        pq = dot(p, q)
        alpha = torch.where(
            pq > 0, rs / torch.where(pq > 0, pq, torch.ones_like(pq)), torch.zeros_like(pq)
        )
        x = x + alpha * p
        r = r - alpha * q
        rs_new = dot(r, r)
        beta = torch.where(
            rs > 0, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), torch.zeros_like(rs)
        )
        p = r + beta * p
        rs = rs_new
        if check_steps and not bool(torch.isfinite(rs).all()):
            raise ValueError(f"cg: the residual became NaN or inf at step {k}")
        if any(cb(k, x) for cb in callbacks):
            break
    return x


def sirt(
    A: Operator,
    y: torch.Tensor,
    iterations: int,
    x0: torch.Tensor | None = None,
    *,
    min_constraint: float | None = None,
    max_constraint: float | None = None,
    callbacks: Sequence[Callback] = (),
) -> torch.Tensor:
    """SIRT: ``x ← x + C Aᵀ R (y − A x)`` with ``R = 1/row sums``, ``C = 1/column sums``."""
    _check_same_device(y=y, x0=x0)
    ones_x = torch.ones(A.domain_shape, dtype=y.dtype, device=y.device)
    ones_y = torch.ones(A.range_shape, dtype=y.dtype, device=y.device)
    row = A(ones_x)
    col = A.T(ones_y)
    R = torch.where(row > 1e-12, 1 / row.clamp_min(1e-12), torch.zeros_like(row))
    C = torch.where(col > 1e-12, 1 / col.clamp_min(1e-12), torch.zeros_like(col))
    x = torch.zeros(
        (*y.shape[: y.ndim - len(A.range_shape)], *A.domain_shape), dtype=y.dtype, device=y.device
    )
    if x0 is not None:
        x = x0.clone()
    for k in range(iterations):
        x = x + C * A.T(R * (y - A(x)))
        if min_constraint is not None or max_constraint is not None:
            x = x.clamp(min_constraint, max_constraint)
        if any(cb(k, x) for cb in callbacks):
            break
    return x
