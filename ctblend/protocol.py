"""Named measurement protocols of the benchmark (../shared/reference/protocol.md).

``svct4``, ``svct6``, ``svct8``: n parallel views over [0, π); ``lact90``: 90 views at 0°…89°;
each optionally ``+noise`` (Poisson counts, I0 = 1e5 photons per bin). Volumes are in protocol
units x = (HU + 1024) / 4095 ∈ [0, 1]; the operator works in voxel units (unit bins and voxels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

import operators as ops

MU_PER_UNIT = 0.0768
"""Attenuation (1/mm) of x = 1: water (x ≈ 0.25) has μ ≈ 0.019 /mm."""
PHOTONS = 1e5

PROTOCOLS = ("svct4", "svct6", "svct8", "lact90")
_NAME = re.compile(r"^(svct(?P<views>\d+)|lact(?P<arc>\d+))(?P<noise>\+noise)?$")


@dataclass(frozen=True)
class Protocol:
    """A measurement protocol: geometry for an ``n × n`` slice plus the noise model."""

    name: str
    n_views: int
    arc_deg: float
    limited_angle: bool
    noise: bool = False

    def geometry(self, n: int) -> ops.Preset:
        """The slice geometry (volume, projection) for an ``n × n`` grid."""
        if self.limited_angle:
            return ops.lact(self.n_views, self.arc_deg, n)
        return ops.svct(self.n_views, n)

    def operator(self, shape: tuple[int, int, int], **kwargs) -> ops.Operator:
        """Slice-wise operator for a ``(Z, H, W)`` volume."""
        z, h, w = shape
        if h != w:
            raise ValueError(f"protocol {self.name}: expected square slices, got {h} × {w}")
        vg, pg = self.geometry(h)
        return ops.Operator(ops.volume((z, h, w)), pg, **kwargs)

    def simulate(
        self, A: ops.Operator, x: torch.Tensor, voxel_mm: float = 1.0, seed: int = 0
    ) -> torch.Tensor:
        """Measurements of ``x`` ``(Z, H, W)``: ``A x``, with Poisson noise for ``+noise``.

        ``voxel_mm`` converts voxel-unit line integrals to physical path lengths for the noise.
        """
        y = A(x)
        if not self.noise:
            return y
        scale = MU_PER_UNIT * voxel_mm
        g = torch.Generator(device="cpu").manual_seed(seed)
        rate = PHOTONS * torch.exp(-y.double().cpu() * scale)
        counts = torch.poisson(rate, generator=g).clamp_min(1.0)
        return (-torch.log(counts / PHOTONS) / scale).to(y.dtype).to(y.device)


def get_protocol(name: str) -> Protocol:
    """``svct8``, ``lact90``, ``svct4+noise``, … → ``Protocol``."""
    match = _NAME.match(name)
    if not match:
        raise ValueError(
            f"unknown protocol {name!r}: expected svct<N> or lact<ARC>, optionally +noise "
            f"(benchmark protocols: {', '.join(PROTOCOLS)})"
        )
    noise = bool(match["noise"])
    if match["views"]:
        views = int(match["views"])
        if views < 1:
            raise ValueError(f"protocol {name!r}: needs at least one view")
        return Protocol(name, views, 180.0, False, noise)
    arc = int(match["arc"])
    if not 1 <= arc <= 180:
        raise ValueError(f"protocol {name!r}: limited-angle arc must be 1…180 degrees")
    return Protocol(name, arc, float(arc), True, noise)
