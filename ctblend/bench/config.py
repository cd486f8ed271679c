"""Benchmark settings: methods, protocols, ablations and :class:`BenchConfig` (YAML load/save)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctblend.config_io import from_dict, read_yaml_config, write_yaml_config
from ctblend.data.scaling import SCALES, scale_size
from ctblend.protocol import get_protocol

BENCH_METHODS = (
    "fbp",
    "fdk",
    "fbp-unet",
    "sirt",
    "tv",
    "dds",
    "dds2d",
    "diffusionblend",
    "diffusionblend++",
)
#: The methods of a run that names none (``fdk``, FBP of a cone beam, is what ``fbp`` does there).
DEFAULT_METHODS = tuple(m for m in BENCH_METHODS if m != "fdk")
BENCH_PROTOCOLS = ("svct8", "svct6", "svct4", "lact90")
DEFAULT_ABLATION = "default"
#: diffusionblend++ ablations (protocol.md) as overrides of the default cell (adjacency + cross,
#: cross every 2nd step, 200 NFE), which is the reference row of the ablation table.
ABLATIONS: dict[str, dict[str, Any]] = {
    "partition=fixed": {"partition": "fixed"},
    "partition=adjacency": {"partition": "adjacency"},
    "cross_every=4": {"cross_every": 4},
    "cross_every=8": {"cross_every": 8},
    "nfe=50": {"nfe": 50},
    "nfe=100": {"nfe": 100},
    "nfe=200": {"nfe": 200},
    "clip_x0=false": {"clip_x0": False},
    "consistency=admm-tvz": {"consistency": "admm-tvz"},
    "eps_from=x0": {"eps_from": "x0"},
}
#: Prior folder base names under ``ctblend/weights`` (``<base>_<scale>``) per prior kind.
QUICK = {
    "volumes": ("phantom:18",),
    "protocols": ("svct8", "lact90"),
    "methods": ("fbp", "fbp-unet", "sirt", "tv", "diffusionblend++"),
    "scale": 32,
    "nfe": 4,
    "sirt_iterations": 30,
    "tv_iterations": 30,
}


@dataclass(frozen=True)
class BenchConfig:
    """Everything a benchmark run depends on.

    volumes: files / folders, MANIFEST roles (``test``, ``ood``, ``train``) or volume names of
    ``ct_dir``, or ``phantom[:Z]``. protocols: names (``svct8``, ``lact90+noise``, …), ignored
    when ``geometry`` (a YAML file) is given. ablations: names from ``ABLATIONS`` (diffusionblend++
    only). nfe: NFE of every diffusion method (None: 200, DDS 100). samples: posterior samples
    per diffusion cell (K > 1: their mean is scored, and the std columns say how well their
    per-voxel std predicts the error). Priors: folders (None: the
    shipped ``ctblend/weights/<base>_<scale>`` when present). fbp_unet: a folder holding one
    FBP-UNet folder per protocol (None: ``ctblend/weights/fbpunet_<scale>_<protocol>``).
    spacing_mm: voxel spacing for files without one (``.npy``). precision: how the diffusion
    priors' networks run: ``fp32`` (reference), ``bf16`` (autocast; ~4× faster on CPUs with
    AVX512-BF16/AMX, ε within ~0.3 %; fp32 with a warning where the hardware lacks it) or
    ``auto`` (the default: bf16 where the hardware has it natively, else fp32); the precision
    used is part of each cell's prior label, so cells of different precision are never mixed.
    """

    out_dir: str = "bench"
    volumes: tuple[str, ...] = ("test", "ood")
    ct_dir: str | None = None
    protocols: tuple[str, ...] = BENCH_PROTOCOLS
    methods: tuple[str, ...] = DEFAULT_METHODS
    ablations: tuple[str, ...] = ()
    scale: str | int = "cpu128"
    z_range: tuple[int, int] | None = None
    seeds: tuple[int, ...] = (0,)
    nfe: int | None = None
    samples: int = 1
    sirt_iterations: int = 200
    tv_iterations: int = 300
    tv_lam: float = 0.01
    prior_blendpp: str | None = None
    prior_blend: str | None = None
    prior_slice2d: str | None = None
    fbp_unet: str | None = None
    geometry: str | None = None
    spacing_mm: tuple[float, float, float] | None = None
    device: str = "cpu"
    precision: str = "auto"
    save_volumes: bool = True
    panels: bool = True

    def __post_init__(self) -> None:
        for name in ("volumes", "protocols", "methods", "ablations", "seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("z_range", "spacing_mm"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        scale_size(self.scale)
        if not self.volumes:
            raise ValueError("no volumes given")
        if not self.seeds:
            raise ValueError("no seeds given")
        unknown = [m for m in self.methods if m not in BENCH_METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; expected some of {list(BENCH_METHODS)}")
        unknown = [a for a in self.ablations if a not in ABLATIONS]
        if unknown:
            raise ValueError(f"unknown ablations {unknown}; expected some of {list(ABLATIONS)}")
        if self.geometry is None:
            for name in self.protocols:
                get_protocol(name)
        if self.z_range is not None and (
            len(self.z_range) != 2 or not 0 <= self.z_range[0] < self.z_range[1]
        ):
            raise ValueError(f"z_range {self.z_range}: expected START STOP with 0 <= START < STOP")
        if self.nfe is not None and self.nfe < 1:
            raise ValueError(f"nfe must be >= 1, got {self.nfe}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples={self.samples!r}; expected an integer >= 1")
        choices = {
            "device": ("cpu", "cuda", "cuda:N", "auto"),
            "precision": ("fp32", "bf16", "auto"),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed and not (name == "device" and value.startswith("cuda:")):
                raise ValueError(f"{name} {value!r}: expected {', '.join(allowed)}")

    @property
    def scale_name(self) -> str:
        """``cpu128``, ``paper256`` or ``<N>px`` (used in shipped weight folder names)."""
        if isinstance(self.scale, str):
            return self.scale
        named = {size: name for name, size in SCALES.items()}
        return named.get(self.size, f"{self.size}px")

    @property
    def size(self) -> int:
        return scale_size(self.scale)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key, value in d.items():
            if isinstance(value, tuple):
                d[key] = list(value)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> BenchConfig:
        return from_dict(cls, data, "bench settings")

    def to_yaml(self, path: str | Path) -> None:
        write_yaml_config(self, path)

    @classmethod
    def from_yaml(cls, path: str | Path) -> BenchConfig:
        return read_yaml_config(cls, path, "bench settings")
