"""One frozen config per reconstruction method; each takes only the options its method uses.

``SIRTConfig.from_dict({"nfe": 4})`` fails with one line naming the option and the method
(``sirt: option 'nfe' is not used by this method (it takes: iterations)``), values out of range
fail the same way, and every config goes to and from YAML (:meth:`MethodConfig.to_yaml`,
:meth:`MethodConfig.from_yaml`). The paper's defaults; DDS uses 100 NFE.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from operators import FILTERS

from ..config_io import read_yaml_config, write_yaml_config
from ..priors.partitions import PartitionPolicy

__all__ = [
    "CONSISTENCIES",
    "PARTITIONS",
    "DDS2DConfig",
    "DDSConfig",
    "DiffusionBlendConfig",
    "DiffusionBlendPPConfig",
    "DiffusionConfig",
    "FBPConfig",
    "FBPUNetConfig",
    "FDKConfig",
    "MethodConfig",
    "SIRTConfig",
    "TVConfig",
]

CONSISTENCIES = ("cg", "cg-slice", "noise-aware")
PARTITIONS = ("fixed", "adjacency", "adjacency+cross")


def at_least(low: float, default: Any) -> Any:
    """A config field whose value must be a number >= ``low`` (an int where ``low`` is one)."""
    return field(default=default, metadata={"at_least": low})


def one_of(choices: tuple[Any, ...], default: Any) -> Any:
    """A config field whose value must be one of ``choices``."""
    return field(default=default, metadata={"one_of": choices})


@dataclass(frozen=True)
class MethodConfig:
    """Base of the method configs: checks every field against its ``at_least`` / ``one_of``
    bound, strict ``from_dict``, YAML in and out, and the step count (``steps_field``)."""

    method: ClassVar[str] = ""
    #: The field that counts the progress callbacks (None: the method makes none).
    steps_field: ClassVar[str | None] = None

    def __init_subclass__(cls, method: str = "", **kwargs: Any) -> None:
        """``class XConfig(MethodConfig, method="x")`` names the method of a config."""
        super().__init_subclass__(**kwargs)
        cls.method = method or cls.method

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "one_of" in f.metadata and value not in f.metadata["one_of"]:
                choices = ", ".join(map(str, f.metadata["one_of"]))
                self._bad(f.name, value, f"one of {choices}")
            low = f.metadata.get("at_least")
            if low is None or (value is None and f.default is None):
                continue
            kind = int if isinstance(low, int) else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind) or value < low:
                self._bad(f.name, value, f"{'an integer' if kind is int else 'a number'} >= {low}")

    def _bad(self, name: str, value: Any, expected: str) -> None:
        raise ValueError(f"{self.method}: option {name}={value!r}; expected {expected}")

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The option names this method takes."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MethodConfig:
        """The config of ``data``; an option this method does not use is a one-line error."""
        for key in data:
            if key not in cls.options():
                raise ValueError(
                    f"{cls.method}: option {key!r} is not used by this method "
                    f"(it takes: {', '.join(cls.options()) or 'no options'})"
                )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_yaml(cls, path: str | Path) -> MethodConfig:
        return read_yaml_config(cls, path, f"{cls.method} options")

    def to_yaml(self, path: str | Path) -> Path:
        return write_yaml_config(self, path)

    @property
    def steps(self) -> int | None:
        """How often the method calls its progress callback (None: it does not)."""
        return None if self.steps_field is None else getattr(self, self.steps_field)


@dataclass(frozen=True)
class FBPConfig(MethodConfig, method="fbp"):
    """Filtered back-projection with the ramp filter ``filter``."""

    filter: str = one_of(FILTERS, "ram-lak")


@dataclass(frozen=True)
class FDKConfig(FBPConfig, method="fdk"):
    """FDK of a circular cone beam; ``short_scan`` None: Parker weights when the scan is
    shorter than a full turn."""

    short_scan: bool | None = one_of((None, False, True), None)


@dataclass(frozen=True)
class FBPUNetConfig(FBPConfig, method="fbp-unet"):
    """FBP, then the protocol's trained FBP-UNet."""


@dataclass(frozen=True)
class SIRTConfig(MethodConfig, method="sirt"):
    """SIRT in the box [0, 1]."""

    steps_field: ClassVar[str] = "iterations"
    iterations: int = at_least(1, 200)


@dataclass(frozen=True)
class TVConfig(MethodConfig, method="tv"):
    """3D TV least squares by PDHG with weight ``lam``."""

    steps_field: ClassVar[str] = "iterations"
    lam: float = at_least(0.0, 0.01)
    iterations: int = at_least(1, 300)


@dataclass(frozen=True)
class DiffusionConfig(MethodConfig):
    """What every diffusion method takes: NFE, DDIM η, CG iterations per step, seed, and whether
    each Tweedie x̂0 is clipped to the data range before data consistency (``clip_x0``)."""

    steps_field: ClassVar[str] = "nfe"
    nfe: int = at_least(1, 200)
    eta: float = at_least(0.0, 0.85)
    cg_iters: int = at_least(0, 5)
    seed: int = 0
    clip_x0: bool = one_of((False, True), True)


@dataclass(frozen=True)
class DDSConfig(DiffusionConfig, method="dds"):
    """DDS: the 2D prior with ADMM TV along z. ``lam`` None: 0.04 sparse view, 0.4 limited
    angle; ``admm_persistent`` carries z, w across steps (with ``admm_iterations=1``: the DDS
    code)."""

    nfe: int = at_least(1, 100)
    rho: float = at_least(0.0, 10.0)
    lam: float | None = at_least(0.0, None)
    admm_iterations: int = at_least(1, 3)
    admm_persistent: bool = one_of((False, True), False)


@dataclass(frozen=True)
class _CGDiffusionConfig(DiffusionConfig):
    """A diffusion method with a choice of data consistency: ``cg`` (one global solve),
    ``cg-slice`` (per-slice inner products) or ``noise-aware`` (weight ``gamma``)."""

    consistency: str = one_of(CONSISTENCIES, "cg")
    gamma: float = at_least(0.0, 1.0)


@dataclass(frozen=True)
class DDS2DConfig(_CGDiffusionConfig, method="dds2d"):
    """DDS-2D: the 2D prior slice by slice, CG data consistency."""


@dataclass(frozen=True)
class DiffusionBlendConfig(_CGDiffusionConfig, method="diffusionblend"):
    """DiffusionBlend: the prior of 3-slice windows whose middle slice's ε is used; the options
    of DDS-2D."""


@dataclass(frozen=True)
class DiffusionBlendPPConfig(_CGDiffusionConfig, method="diffusionblend++"):
    """DiffusionBlend++: the partition policy is ``fixed`` (adjacency, offset 0), ``adjacency``
    (random offset) or ``adjacency+cross`` (cross partitions every ``cross_every``-th step)."""

    partition: str = one_of(PARTITIONS, "adjacency+cross")
    cross_every: int = at_least(1, 2)

    @property
    def policy(self) -> PartitionPolicy:
        """The prior's partition policy for these options."""
        if self.partition == "fixed":
            return PartitionPolicy("fixed", 0)
        return PartitionPolicy("random", self.cross_every if self.partition != "adjacency" else 0)
