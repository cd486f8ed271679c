"""ASTRA Toolbox backend: 2D CPU projectors and, when ASTRA has a GPU, 2D/3D CUDA.

The CPU pair is matched exactly; ASTRA's CUDA backprojectors are only approximately the
adjoint of their projectors, which the backend says once per operator (a warning).

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
import re
import warnings
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


_MIN_VERSION = (2, 5)  # astra.experimental.direct_FP2D/BP2D with DLPack tensors


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def _require_astra():
    if not astra_available():
        raise ValueError(
            "backend 'astra' needs the astra-toolbox package: pip install ctblend[astra]"
        )
    import astra
    import astra.experimental

    if _version(astra.__version__) < _MIN_VERSION:
        raise ValueError(
            f"backend 'astra' needs astra-toolbox >= 2.5 (direct FP/BP calls), found "
            f"{astra.__version__}"
        )
    return astra


class AstraBackend:
    """ASTRA projector pair for one geometry, batched over the leading axis.

    ASTRA reports some failures (CUDA errors, for one) only on its log and leaves the output
    at zero; an all-zero result for an input that the geometry sees raises a RuntimeError.
    CUDA tensors run on their own device (projectors are made per GPU index).
    """

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
                "process); use backend='joseph' (the exact-adjoint 3D default, CPU or GPU)"
            )
        self.domain_shape = vol.shape
        self.range_shape = pg.shape
        self.threads = threads or min(os.cpu_count() or 1, 8)
        self._projectors: dict[tuple[str, int], int] = {}
        self._seen: dict[tuple[str, bool], torch.Tensor] = {}
        self._warned = False
        if self.three_d:
            self._warn_unmatched()

    def _warn_unmatched(self) -> None:
        """Say once per operator that ASTRA's CUDA backprojector is not the exact adjoint."""
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"backend 'astra' on CUDA ({type(self.pg).__name__}): ASTRA's CUDA backprojector "
                "is only approximately the adjoint of its projector (dot test up to ~1e-2, see "
                "docs/operators.md; measure yours with operators.dot_test(A, device='cuda')); "
                "CG and SIRT assume an exact adjoint: use backend='joseph' (3D) or 'torch_sparse'",
                stacklevel=4,
            )

    def _projector(self, kind: str, gpu: int = 0) -> int:
        """The ASTRA projector ``kind`` (``cpu``, ``cuda``, ``cuda3d``) on GPU ``gpu``."""
        key = (kind, gpu)
        if key not in self._projectors:
            pg, vg = self.pg.to_astra(), self.vol.to_astra()
            if kind == "cpu":
                pid = self.astra.create_projector(_CPU_KERNELS[pg["type"]], pg, vg)
            else:
                pid = self.astra.create_projector(kind, pg, vg, {"GPUIndex": gpu})
            self._projectors[key] = pid
        return self._projectors[key]

    def close(self) -> None:
        """Delete this backend's ASTRA projectors (3D ones through ``astra.projector3d``)."""
        for (kind, _), pid in self._projectors.items():
            module = self.astra.projector3d if kind == "cuda3d" else self.astra.projector
            module.delete(pid)
        self._projectors.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: ASTRA may be gone already
            pass

    def _call(self, src: torch.Tensor, adjoint: bool) -> torch.Tensor:
        """One ASTRA FP (or BP) per batch item of ``src`` (float32, contiguous)."""
        out_shape = self.domain_shape if adjoint else self.range_shape
        out = torch.zeros((src.shape[0], *out_shape), dtype=torch.float32, device=src.device)
        exp = self.astra.experimental
        gpu = (src.device.index or 0) if src.is_cuda else 0
        if self.three_d:
            pid = self._projector("cuda3d", gpu)
            call = exp.direct_BP3D if adjoint else exp.direct_FP3D
        else:
            pid = self._projector("cuda" if src.is_cuda else "cpu", gpu)
            call = exp.direct_BP2D if adjoint else exp.direct_FP2D

        def one(i: int) -> None:
            a, b = (out[i], src[i]) if adjoint else (src[i], out[i])
            if src.is_cuda:
                call(pid, a, b)
            else:
                call(pid, a.numpy(), b.numpy())

        if src.is_cuda:
            with torch.cuda.device(src.device):
                torch.cuda.current_stream().synchronize()  # inputs ready before ASTRA reads
                for i in range(src.shape[0]):
                    one(i)
        elif self.three_d:
            for i in range(src.shape[0]):
                one(i)
        else:
            with ThreadPoolExecutor(self.threads) as pool:
                list(pool.map(one, range(src.shape[0])))
        return out

    def _seen_by_rays(self, device: torch.device, adjoint: bool) -> torch.Tensor:
        """Mask of the input entries of an FP (pixels) or a BP (bins) that some ray touches:
        the other direction applied to ones."""
        key = (str(device), adjoint)
        if key not in self._seen:
            other = self.domain_shape if adjoint else self.range_shape
            ones = torch.ones((1, *other), dtype=torch.float32, device=device)
            reach = self._call(ones, adjoint=not adjoint)
            if not bool(reach.any()):
                raise RuntimeError(
                    "ASTRA returned all zeros for a projection of ones: the projector failed "
                    "(see ASTRA's messages on stderr) or the geometry misses the volume"
                )
            self._seen[key] = reach[0] != 0
        return self._seen[key]

    def _run(self, inp: torch.Tensor, adjoint: bool) -> torch.Tensor:
        if inp.is_cuda and not astra_cuda_available():
            raise ValueError(
                "CUDA tensors with backend 'astra' need ASTRA with CUDA, which is unavailable"
            )
        if inp.is_cuda:
            self._warn_unmatched()
        src = inp.to(torch.float32).contiguous()
        out = self._call(src, adjoint)
        seen = self._seen_by_rays(src.device, adjoint)
        lost = (out.flatten(1) == 0).all(1) & (src * seen).flatten(1).ne(0).any(1)
        if bool(lost.any()):
            raise RuntimeError(
                f"ASTRA returned all zeros for {int(lost.sum())} of {len(lost)} inputs that its "
                f"rays see: its {'BP' if adjoint else 'FP'} failed (see ASTRA's messages on stderr)"
            )
        return out.to(inp.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, adjoint=False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._run(y, adjoint=True)
