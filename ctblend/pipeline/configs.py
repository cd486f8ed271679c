"""One frozen config per reconstruction method; each takes only the options its method uses.

``SIRTConfig.from_dict({"nfe": 4})`` fails with one line naming the option and the method
(``sirt: option 'nfe' is not used by this method (it takes: iterations)``), values out of range
fail the same way, and every config goes to and from YAML (:meth:`MethodConfig.to_yaml`,
:meth:`MethodConfig.from_yaml`). The paper's defaults; DDS uses 100 NFE.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
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
    "MethodConfig",
    "SIRTConfig",
    "TVConfig",
]

CONSISTENCIES = ("cg", "cg-slice", "noise-aware")
PARTITIONS = ("fixed", "adjacency", "adjacency+cross")


@dataclass(frozen=True)
class MethodConfig:
    """Base of the method configs: strict ``from_dict``, YAML in and out, step count."""

    method: ClassVar[str] = ""

    def _at_least(self, name: str, low: float) -> None:
        """A one-line ValueError unless field ``name`` is a number >= ``low`` (an int where
        ``low`` is one)."""
        value = getattr(self, name)
        kind = int if isinstance(low, int) else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or value < low:
            expected = f"an integer >= {low}" if kind is int else f"a number >= {low}"
            raise ValueError(f"{self.method}: option {name}={value!r}; expected {expected}")

    def _one_of(self, name: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise ValueError(
                f"{self.method}: option {name}={value!r}; expected one of {', '.join(choices)}"
            )

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
        return None


@dataclass(frozen=True)
class FBPConfig(MethodConfig):
    """Filtered back-projection with the ramp filter ``filter``."""

    method: ClassVar[str] = "fbp"
    filter: str = "ram-lak"

    def __post_init__(self) -> None:
        self._one_of("filter", FILTERS)


@dataclass(frozen=True)
class FBPUNetConfig(FBPConfig):
    """FBP, then the protocol's trained FBP-UNet."""

    method: ClassVar[str] = "fbp-unet"


@dataclass(frozen=True)
class SIRTConfig(MethodConfig):
    """SIRT in the box [0, 1]."""

    method: ClassVar[str] = "sirt"
    iterations: int = 200

    def __post_init__(self) -> None:
        self._at_least("iterations", 1)

    @property
    def steps(self) -> int:
        return self.iterations


@dataclass(frozen=True)
class TVConfig(MethodConfig):
    """3D TV least squares by PDHG with weight ``lam``."""

    method: ClassVar[str] = "tv"
    lam: float = 0.01
    iterations: int = 300

    def __post_init__(self) -> None:
        self._at_least("lam", 0.0)
        self._at_least("iterations", 1)

    @property
    def steps(self) -> int:
        return self.iterations


@dataclass(frozen=True)
class DiffusionConfig(MethodConfig):
    """What every diffusion method takes: NFE, DDIM η, CG iterations per step, seed."""

    nfe: int = 200
    eta: float = 0.85
    cg_iters: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        self._at_least("nfe", 1)
        self._at_least("eta", 0.0)
        self._at_least("cg_iters", 0)

    @property
    def steps(self) -> int:
        return self.nfe


@dataclass(frozen=True)
class DDSConfig(DiffusionConfig):
    """DDS: the 2D prior with ADMM TV along z. ``lam`` None: 0.04 sparse view, 0.4 limited
    angle; ``admm_persistent`` carries z, w across steps (with ``admm_iterations=1``: the DDS
    code)."""

    method: ClassVar[str] = "dds"
    nfe: int = 100
    rho: float = 10.0
    lam: float | None = None
    admm_iterations: int = 3
    admm_persistent: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._at_least("rho", 0.0)
        self._at_least("admm_iterations", 1)
        if self.lam is not None:
            self._at_least("lam", 0.0)
        if not isinstance(self.admm_persistent, bool):
            raise ValueError(
                f"{self.method}: option admm_persistent={self.admm_persistent!r}; expected "
                "true or false"
            )


@dataclass(frozen=True)
class _CGDiffusionConfig(DiffusionConfig):
    """A diffusion method with a choice of data consistency: ``cg`` (one global solve),
    ``cg-slice`` (per-slice inner products) or ``noise-aware`` (weight ``gamma``)."""

    consistency: str = "cg"
    gamma: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._one_of("consistency", CONSISTENCIES)
        self._at_least("gamma", 0.0)


@dataclass(frozen=True)
class DDS2DConfig(_CGDiffusionConfig):
    """DDS-2D: the 2D prior slice by slice, CG data consistency."""

    method: ClassVar[str] = "dds2d"


@dataclass(frozen=True)
class DiffusionBlendConfig(_CGDiffusionConfig):
    """DiffusionBlend: the 3-slice-window prior."""

    method: ClassVar[str] = "diffusionblend"


@dataclass(frozen=True)
class DiffusionBlendPPConfig(_CGDiffusionConfig):
    """DiffusionBlend++: the partition policy is ``fixed`` (adjacency, offset 0), ``adjacency``
    (random offset) or ``adjacency+cross`` (cross partitions every ``cross_every``-th step)."""

    method: ClassVar[str] = "diffusionblend++"
    partition: str = "adjacency+cross"
    cross_every: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        self._one_of("partition", PARTITIONS)
        self._at_least("cross_every", 1)

    @property
    def policy(self) -> PartitionPolicy:
        """The prior's partition policy for these options."""
        if self.partition == "fixed":
            return PartitionPolicy("fixed", 0)
        return PartitionPolicy("random", self.cross_every if self.partition != "adjacency" else 0)
