"""``Operator``: a matched projector/backprojector pair with batching and autograd.

``A = Operator(volume((H, W)), parallel(180, 2 * H))``; ``y = A(x)`` maps ``(..., H, W)`` to
``(..., n_angles, det_count)`` and ``A.T(y)`` is its exact adjoint. A 2D geometry with a 3D
volume ``(Z, H, W)`` projects every slice: ``(..., Z, H, W) → (..., Z, n_angles, det_count)``.
3D geometries map ``(..., Z, H, W) → (..., det_rows, n_angles, det_cols)``.
"""

from __future__ import annotations

import copy
import math

import torch

from .backends import make_backend
from .geometry import ProjectionGeometry, VolumeGeometry

_COMPUTE_DTYPES = (torch.float32, torch.float64)


class _Project(torch.autograd.Function):
    """``y = A x`` with ``∂/∂x = Aᵀ``; the backward is itself differentiable."""

    @staticmethod
    def forward(ctx, x, op):
        ctx.op = op
        return op._apply_backend(x, adjoint=False)

    @staticmethod
    def backward(ctx, grad):
        return _Backproject.apply(grad, ctx.op), None


class _Backproject(torch.autograd.Function):
    """``x = Aᵀ y`` with ``∂/∂y = A``."""

    @staticmethod
    def forward(ctx, y, op):
        ctx.op = op
        return op._apply_backend(y, adjoint=True)

    @staticmethod
    def backward(ctx, grad):
        return _Project.apply(grad, ctx.op), None


class Operator:
    """Linear tomography operator ``A`` for a (volume, projection) geometry pair.

    Args:
        vol_geom: the voxel grid (``operators.volume``).
        proj_geom: any projection geometry of ``operators.geometry``.
        backend: ``"auto"``, ``"torch_sparse"``, ``"astra"``, ``"joseph"`` or ``"raymarch"``.
        check_finite: reject inputs with NaN/inf (one cheap reduction per call).
        memory_budget: bytes the ``torch_sparse`` matrix cache may use (default 8 GiB), or the
            working memory of one chunk of rays of ``joseph`` (64 MiB) or ``raymarch`` (256 MiB
            on the CPU, 2 GiB on a GPU).
    """

    def __init__(
        self,
        vol_geom: VolumeGeometry,
        proj_geom: ProjectionGeometry,
        backend: str = "auto",
        *,
        check_finite: bool = True,
        memory_budget: int | None = None,
    ):
        if not isinstance(vol_geom, VolumeGeometry):
            raise ValueError(f"vol_geom: expected a VolumeGeometry, got {type(vol_geom).__name__}")
        if not isinstance(proj_geom, ProjectionGeometry):
            raise ValueError(
                f"proj_geom: expected a projection geometry, got {type(proj_geom).__name__}"
            )
        if proj_geom.ndim == 3 and vol_geom.ndim != 3:
            raise ValueError(
                f"a 3D projection geometry needs a (Z, H, W) volume, got shape {vol_geom.shape}"
            )
        self.vol_geom, self.proj_geom = vol_geom, proj_geom
        self.slicewise = proj_geom.ndim == 2 and vol_geom.ndim == 3
        #: the grid that one application of the projection geometry sees: one slice of a
        #: slice-wise operator, else the volume itself
        self.slice_geom = (
            VolumeGeometry(vol_geom.shape[1:], vol_geom.spacing[1:], vol_geom.center[1:])
            if self.slicewise
            else vol_geom
        )
        self.backend = make_backend(
            backend, self.slice_geom, proj_geom, memory_budget=memory_budget
        )
        lead = vol_geom.shape[:1] if self.slicewise else ()
        self.domain_shape: tuple[int, ...] = vol_geom.shape
        self.range_shape: tuple[int, ...] = lead + tuple(self.backend.range_shape)
        self.check_finite = check_finite

    def __repr__(self) -> str:
        return (
            f"Operator(domain_shape={self.domain_shape}, range_shape={self.range_shape}, "
            f"backend={self.backend.name!r}, proj_geom={type(self.proj_geom).__name__})"
        )

    @property
    def T(self) -> TransposedOperator:  # noqa: N802 - mathematical notation
        """The adjoint ``Aᵀ``: ``A.T(y)``."""
        return TransposedOperator(self)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., *domain_shape) → (..., *range_shape)``."""
        x, out_dtype = self.prepare(x, "domain")
        return _Project.apply(x, self).to(out_dtype)

    forward = __call__

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(..., *range_shape) → (..., *domain_shape)``."""
        y, out_dtype = self.prepare(y, "range")
        return _Backproject.apply(y, self).to(out_dtype)

    def prepare(self, t: torch.Tensor, space: str) -> tuple[torch.Tensor, torch.dtype]:
        """Check ``t`` ``(..., *shape)`` of the ``"domain"`` (x) or ``"range"`` (y); return it in
        its compute dtype (float32 or float64) with the dtype to give results back in."""
        shape, name = (self.domain_shape, "x") if space == "domain" else (self.range_shape, "y")
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape[t.ndim - len(shape) :]) != tuple(shape) or t.ndim < len(shape):
            raise ValueError(
                f"{name}: expected shape (..., {', '.join(map(str, shape))}), got {tuple(t.shape)}"
            )
        if not (t.is_floating_point()):
            raise ValueError(f"{name}: expected a floating-point tensor, got {t.dtype}")
        if self.check_finite and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: contains NaN or inf values")
        out_dtype = t.dtype
        if t.dtype not in _COMPUTE_DTYPES:
            t = t.to(torch.float32)
        return t, out_dtype

    def _apply_backend(self, t: torch.Tensor, adjoint: bool) -> torch.Tensor:
        core = self.range_shape if adjoint else self.domain_shape
        inner = len(self.backend.range_shape if adjoint else self.backend.domain_shape)
        batch = t.shape[: t.ndim - len(core)]
        # the backends see plain tensors: no autograd history (ASTRA cannot take it) and no
        # autocast (a projection runs in the dtype of its input, float32 or float64)
        flat = t.detach().reshape(-1, *t.shape[t.ndim - inner :])
        with torch.no_grad(), torch.autocast(flat.device.type, enabled=False):
            out = self.backend.adjoint(flat) if adjoint else self.backend.forward(flat)
        out_core = self.domain_shape if adjoint else self.range_shape
        return out.reshape(*batch, *out_core)

    def unchecked(self) -> Operator:
        """This operator without the per-call NaN/inf check (a host sync per call on CUDA),
        for solvers that check their iterates once per step instead."""
        op = copy.copy(self)
        op.check_finite = False
        return op

    def norm(self, iterations: int = 50, seed: int = 0, dtype=torch.float64, device="cpu") -> float:
        """Largest singular value ``‖A‖₂`` by power iteration on ``AᵀA``."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn(self.domain_shape, generator=g, dtype=dtype).to(device)
        x /= torch.linalg.vector_norm(x)
        sigma2 = 0.0
        for _ in range(iterations):
            x = self.adjoint(self(x))
            sigma2 = float(torch.linalg.vector_norm(x))
            if sigma2 == 0.0:
                return 0.0
            x /= sigma2
        return math.sqrt(sigma2)


class TransposedOperator:
    """``Aᵀ`` as an operator of its own: ``A.T(y)``, ``A.T.T is A``-like."""

    def __init__(self, op: Operator):
        self.op = op
        self.domain_shape = op.range_shape
        self.range_shape = op.domain_shape

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(y)

    @property
    def T(self) -> Operator:  # noqa: N802
        return self.op

    def __repr__(self) -> str:
        return f"{self.op!r}.T"


def dot_test(
    A: Operator, dtype: torch.dtype = torch.float64, seed: int = 0, device="cpu", batch: int = 1
) -> float:
    """Relative adjoint mismatch ``|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| / (‖Ax‖ ‖y‖)`` for random ``x``, ``y``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *A.domain_shape), generator=g, dtype=torch.float64).to(device, dtype)
    y = torch.randn((batch, *A.range_shape), generator=g, dtype=torch.float64).to(device, dtype)
    ax, aty = A(x), A.T(y)
    lhs = torch.sum(ax.double() * y.double())
    rhs = torch.sum(x.double() * aty.double())
    scale = torch.linalg.vector_norm(ax.double()) * torch.linalg.vector_norm(y.double())
    return float(abs(lhs - rhs) / scale)


def gradcheck(A: Operator, seed: int = 0, **kwargs) -> bool:
    """``torch.autograd.gradcheck`` (and gradgradcheck) of ``A`` and ``Aᵀ`` in float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(A.domain_shape, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(A.range_shape, generator=g, dtype=torch.float64, requires_grad=True)
    ok = torch.autograd.gradcheck(A, (x,), **kwargs)
    ok &= torch.autograd.gradcheck(A.T, (y,), **kwargs)
    ok &= torch.autograd.gradgradcheck(A, (x,), **kwargs)
    return bool(ok)
