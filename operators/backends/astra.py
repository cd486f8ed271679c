"""ASTRA Toolbox backend: 2D CPU projectors and, when ASTRA has a GPU, 2D/3D CUDA.

2D CPU: ``astra.experimental.direct_FP2D/BP2D`` write straight into the output tensors'
memory (no copies), one slice per call, threaded over slices (ASTRA releases the GIL).
CUDA (2D ``cuda`` projector, 3D ``cuda3d``): only when ``astra.use_cuda()`` is true — without a
GPU, ASTRA's 3D calls kill the process and its 2D CUDA calls silently return zeros, so both
are refused here with a clear error instead.

The CPU kernels are ASTRA's ``linear`` (Joseph) for parallel beams and ``line_fanflat``
(line-intersection lengths) for flat fan beams; each BP is the exact transpose of its FP.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import torch

from ..geometry import FanGeometry, ProjectionGeometry, VolumeGeometry

_CPU_KERNELS = {
    "parallel": "linear",
    "parallel_vec": "linear",
    "fanflat": "line_fanflat",
    "fanflat_vec": "line_fanflat",
}


@cache
def astra_available() -> bool:
    try:
        import astra  # noqa: F401
    except ImportError:
        return False
    return True


@cache
def astra_cuda_available() -> bool:
    """True when ASTRA is installed with CUDA and sees a GPU (safe to call without one)."""
    if not astra_available():
        return False
    import astra

    return bool(astra.use_cuda())


def _require_astra():
    if not astra_available():
        raise ValueError(
            "backend 'astra' needs the astra-toolbox package: pip install ctblend[astra]"
        )
    import astra
    import astra.experimental

    return astra


class AstraBackend:
    """ASTRA projector pair for one geometry, batched over the leading axis."""

    name = "astra"

    def __init__(self, vol: VolumeGeometry, pg: ProjectionGeometry, threads: int | None = None):
        self.astra = _require_astra()
        if isinstance(pg, FanGeometry) and pg.curved:
            raise ValueError(
                "backend 'astra' has no 2D fan beam with an arc detector; use torch_sparse"
            )
        self.vol, self.pg = vol, pg
        self.three_d = pg.ndim == 3
        if self.three_d and not astra_cuda_available():
            raise ValueError(
                "ASTRA 3D projectors need a CUDA GPU and none is available (ASTRA would crash the "
                "process); use backend='raymarch' for 3D geometries on the CPU"
            )
        self.domain_shape = vol.shape
        self.range_shape = pg.shape
        self.threads = threads or min(os.cpu_count() or 1, 8)
        self._projectors: dict[str, int] = {}

    def _projector(self, kind: str) -> int:
        if kind not in self._projectors:
            astra, pg, vg = self.astra, self.pg.to_astra(), self.vol.to_astra()
            if kind == "cuda3d":
                self._projectors[kind] = astra.create_projector("cuda3d", pg, vg)
            elif kind == "cuda":
                self._projectors[kind] = astra.create_projector("cuda", pg, vg)
            else:
                self._projectors[kind] = astra.create_projector(_CPU_KERNELS[pg["type"]], pg, vg)
        return self._projectors[kind]

    def __del__(self):
        for pid in getattr(self, "_projectors", {}).values():
            try:
                self.astra.projector.delete(pid)
            except Exception:  # interpreter shutdown: ASTRA may be gone already
                pass

    def _run(self, inp: torch.Tensor, adjoint: bool) -> torch.Tensor:
        out_shape = self.domain_shape if adjoint else self.range_shape
        if inp.is_cuda and not astra_cuda_available():
            raise ValueError(
                "CUDA tensors with backend 'astra' need ASTRA with CUDA, which is unavailable"
            )
        src = inp.to(torch.float32).contiguous()
        out = torch.zeros((src.shape[0], *out_shape), dtype=torch.float32, device=src.device)
        exp = self.astra.experimental
        if self.three_d:
            pid = self._projector("cuda3d")
            call = exp.direct_BP3D if adjoint else exp.direct_FP3D
        else:
            pid = self._projector("cuda" if src.is_cuda else "cpu")
            call = exp.direct_BP2D if adjoint else exp.direct_FP2D

        def one(i: int) -> None:
            a, b = (out[i], src[i]) if adjoint else (src[i], out[i])
            if src.is_cuda:
                call(pid, a, b)
            else:
                call(pid, a.numpy(), b.numpy())

        if src.is_cuda or self.three_d:
            for i in range(src.shape[0]):
                one(i)
        else:
            with ThreadPoolExecutor(self.threads) as pool:
                list(pool.map(one, range(src.shape[0])))
        return out.to(inp.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, adjoint=False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._run(y, adjoint=True)
