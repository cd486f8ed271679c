"""Backends behind one small interface: ``domain_shape``, ``range_shape``, ``forward(x)`` and
``adjoint(y)`` on tensors with one leading batch axis. ``make_backend`` picks by name."""

from __future__ import annotations

from ..geometry import ProjectionGeometry, VolumeGeometry

BACKENDS = ("auto", "torch_sparse", "astra", "joseph", "raymarch")


def make_backend(name: str, vol: VolumeGeometry, pg: ProjectionGeometry, memory_budget=None):
    """The backend ``name`` for a 2D slice geometry or a 3D geometry.

    ``auto`` picks a matched pair (``A.T`` the exact adjoint, as CG and SIRT assume):
    2D → ``torch_sparse``, 3D → ``joseph`` (``raymarch`` samples every half voxel instead).
    ASTRA's CUDA projectors are faster but their backprojector is only approximately the
    adjoint; ask for ``astra`` to use them.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    if name == "auto":
        name = "torch_sparse" if pg.ndim == 2 else "joseph"
    if name == "torch_sparse":
        from .sparse import TorchSparseBackend

        return TorchSparseBackend(vol, pg, memory_budget=memory_budget)
    if name == "astra":
        from .astra import AstraBackend

        return AstraBackend(vol, pg)
    if name == "joseph":
        from .joseph import JosephBackend

        return JosephBackend(vol, pg, memory_budget=memory_budget)
    from .raymarch import RayMarchBackend

    return RayMarchBackend(vol, pg, memory_budget=memory_budget)
