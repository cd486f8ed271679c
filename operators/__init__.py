"""operators — matched, batched, differentiable tomography operators in PyTorch.

>>> import operators as ops
>>> A = ops.Operator(*ops.svct(8, 128))          # 8 parallel views of a 128 × 128 grid
>>> y = A(x)                                      # (..., 128, 128) → (..., 8, 256)
>>> x_fbp = ops.fbp(A, y)                         # filtered backprojection
"""

from .geometry import (
    ConeGeometry,
    ConeVecGeometry,
    FanGeometry,
    FanVecGeometry,
    Parallel3DGeometry,
    Parallel3DVecGeometry,
    ParallelGeometry,
    ParallelVecGeometry,
    Preset,
    ProjectionGeometry,
    VolumeGeometry,
    cone,
    cone_vec,
    fan_arc,
    fan_flat,
    fan_vec,
    from_astra,
    lact,
    parallel,
    parallel3d,
    parallel3d_vec,
    parallel_vec,
    svct,
    volume,
)
from .operator import Operator, TransposedOperator, dot_test, gradcheck

__all__ = [
    "ConeGeometry",
    "ConeVecGeometry",
    "FanGeometry",
    "FanVecGeometry",
    "Operator",
    "Parallel3DGeometry",
    "Parallel3DVecGeometry",
    "ParallelGeometry",
    "ParallelVecGeometry",
    "Preset",
    "ProjectionGeometry",
    "TransposedOperator",
    "VolumeGeometry",
    "cone",
    "cone_vec",
    "dot_test",
    "fan_arc",
    "fan_flat",
    "fan_vec",
    "from_astra",
    "gradcheck",
    "lact",
    "parallel",
    "parallel3d",
    "parallel3d_vec",
    "parallel_vec",
    "svct",
    "volume",
]
from .fbp import FILTERS, fbp, fdk, filter_projections, parker_weights, ramp_filter  # noqa: E402
from .solvers import cg, sirt  # noqa: E402

__all__ += [
    "FILTERS",
    "cg",
    "fbp",
    "fdk",
    "filter_projections",
    "parker_weights",
    "ramp_filter",
    "sirt",
]
