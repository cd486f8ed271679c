"""Glue to the field's libraries: an ``Operator`` as a deepinv ``LinearPhysics``.

ASTRA geometry dicts (and tomosipo geometries, through tomosipo's ``to_astra``) convert with
``operators.from_astra(proj_geom, vol_geom)``; this module holds what needs a third-party
package, imported only when asked for.

>>> from operators.interop import to_deepinv
>>> physics = to_deepinv(ops.Operator(*ops.svct(8, 128)))
>>> y = physics(x)  # (B, 1, 128, 128) → (B, 1, 8, 256)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import Tensor

from .operator import Operator

if TYPE_CHECKING:  # pragma: no cover - deepinv is an optional dependency
    from deepinv.physics import LinearPhysics


def deepinv_maps(A: Operator) -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
    """``(forward, adjoint)`` with deepinv's call signature ``f(tensor, **params)``.

    ``forward`` is ``A`` and ``adjoint`` its exact adjoint ``A.T``, batched over leading
    dimensions: ``(B, C, H, W) → (B, C, V, D)`` for a 2D geometry. deepinv's per-call physics
    parameters do not apply to a fixed geometry and are ignored.
    """

    def forward(x: Tensor, **_params: Any) -> Tensor:
        return A(x)

    def adjoint(y: Tensor, **_params: Any) -> Tensor:
        return A.T(y)

    return forward, adjoint


def to_deepinv(A: Operator, **physics_options: Any) -> LinearPhysics:
    """``A`` as a ``deepinv.physics.LinearPhysics`` (``physics.A``, ``physics.A_adjoint``,
    ``A_dagger``, ``prox_l2``, …); ``physics_options`` go to ``LinearPhysics`` (e.g.
    ``noise_model=deepinv.physics.GaussianNoise(0.01)``, ``max_iter``). Needs ``deepinv``."""
    try:
        from deepinv.physics import LinearPhysics
    except ImportError as e:
        raise ImportError(f"to_deepinv needs deepinv (pip install deepinv): {e}") from e
    forward, adjoint = deepinv_maps(A)
    return LinearPhysics(A=forward, A_adjoint=adjoint, **physics_options)
