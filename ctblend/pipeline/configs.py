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

CONSISTENCIES = ("cg", "cg-slice", "noise-aware", "admm-tvz")
EPS_FROM = ("network", "x0")
PARTITIONS = ("fixed", "adjacency", "adjacency+cross")


def at_least(low: float, default: Any) -> Any:
    """A config field whose value must be a number >= ``low`` (an int where ``low`` is one)."""
    return field(default=default, metadata={"at_least": low})


def in_range(low: float, high: float, default: float) -> Any:
    """A config field whose value must be a number in [``low``, ``high``]."""
    return field(default=default, metadata={"at_least": low, "at_most": high})


def above(low: float, default: Any) -> Any:
    """A config field whose value must be a number > ``low``."""
    return field(default=default, metadata={"above": low})


def one_of(choices: tuple[Any, ...], default: Any) -> Any:
    """A config field whose value must be one of ``choices``."""
    return field(default=default, metadata={"one_of": choices})


def _bounds_text(low: float | None, high: float | None, strict: float | None) -> str:
    if strict is not None:
        return f"> {strict}"
    return f"in [{low}, {high}]" if high is not None else f">= {low}"


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
            value, meta = getattr(self, f.name), f.metadata
            if "one_of" in meta and value not in meta["one_of"]:
                choices = ", ".join(map(str, meta["one_of"]))
                self._bad(f.name, value, f"one of {choices}")
            bounds = [meta.get(k) for k in ("at_least", "at_most", "above")]
            if bounds == [None] * 3 or (value is None and f.default is None):
                continue
            low, high, strict = bounds
            kind = int if isinstance(low, int) and high is None else (int, float)
            noun = "an integer" if kind is int else "a number"
            if isinstance(value, bool) or not isinstance(value, kind):
                self._bad(f.name, value, f"{noun} {_bounds_text(low, high, strict)}")
            if (
                (low is not None and value < low)
                or (high is not None and value > high)
                or (strict is not None and value <= strict)
            ):
                self._bad(f.name, value, f"{noun} {_bounds_text(low, high, strict)}")

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
    """What every diffusion method takes: NFE, DDIM η ∈ [0, 1], CG iterations per step, seed,
    the number of posterior samples (``samples`` = K: seeds seed … seed + K − 1 in one batch;
    the reconstruction is their mean and a per-voxel standard deviation comes with it), whether
    each Tweedie x̂0 is clipped to the data range before data consistency (``clip_x0``), and
    which ε the DDIM step carries (``eps_from``): ``network`` keeps the network's ε (DDS), ``x0``
    re-derives it from the data-consistent x̂0′, ε = (x_t − √ᾱ_t x̂0′)/√(1 − ᾱ_t)
    (guided-diffusion's ``_predict_eps_from_xstart``, DiffPIR).

    The data consistency (``consistency``): ``cg`` (one global CG solve), ``cg-slice``
    (per-slice inner products), ``noise-aware`` (proximal, weight ``gamma`` > 0) or ``admm-tvz``
    (ADMM on ½‖Ax − y‖² + λ‖D_z x‖₁, DDS's: ``rho``, ``lam`` — None: 0.04 sparse view, 0.4
    limited angle —, ``admm_iterations`` per step, ``admm_persistent`` carries z, w across
    steps). An option of a consistency that is not chosen is refused.
    """

    steps_field: ClassVar[str] = "nfe"
    #: The options only one consistency uses.
    consistency_options: ClassVar[dict[str, str]] = {
        "gamma": "noise-aware",
        "rho": "admm-tvz",
        "lam": "admm-tvz",
        "admm_iterations": "admm-tvz",
        "admm_persistent": "admm-tvz",
    }
    nfe: int = at_least(1, 200)
    eta: float = in_range(0.0, 1.0, 0.85)
    cg_iters: int = at_least(0, 5)
    seed: int = 0
    samples: int = at_least(1, 1)
    clip_x0: bool = one_of((False, True), True)
    eps_from: str = one_of(EPS_FROM, "network")
    consistency: str = one_of(CONSISTENCIES, "cg")
    gamma: float = above(0.0, 1.0)
    rho: float = at_least(0.0, 10.0)
    lam: float | None = at_least(0.0, None)
    admm_iterations: int = at_least(1, 3)
    admm_persistent: bool = one_of((False, True), False)

    def __post_init__(self) -> None:
        super().__post_init__()
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, owner in self.consistency_options.items():
            if self.consistency != owner and getattr(self, name) != defaults[name]:
                self._unused(name, owner)

    def _unused(self, name: str, owner: str) -> None:
        raise ValueError(
            f"{self.method}: option {name!r} is used only with consistency={owner}, "
            f"not consistency={self.consistency}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The options, without those of the consistencies not chosen."""
        owners = self.consistency_options
        return {
            k: v
            for k, v in super().to_dict().items()
            if owners.get(k, self.consistency) == self.consistency
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MethodConfig:
        """As :meth:`MethodConfig.from_dict`; also refuses an option of another consistency."""
        config = super().from_dict(data)
        for name in data:
            owner = cls.consistency_options.get(name)
            if owner is not None and config.consistency != owner:
                config._unused(name, owner)
        return config


@dataclass(frozen=True)
class DDS2DConfig(DiffusionConfig, method="dds2d"):
    """DDS-2D: the 2D prior slice by slice, CG data consistency by default."""


@dataclass(frozen=True)
class DDSConfig(DDS2DConfig, method="dds"):
    """DDS: the 2D prior with ADMM TV along z (``consistency=admm-tvz``), 100 NFE, restarted
    ADMM by default (``admm_persistent=True`` with ``admm_iterations=1`` is the DDS code)."""

    nfe: int = at_least(1, 100)
    consistency: str = one_of(("admm-tvz",), "admm-tvz")


@dataclass(frozen=True)
class DiffusionBlendConfig(DiffusionConfig, method="diffusionblend"):
    """DiffusionBlend: the prior of 3-slice windows whose middle slice's ε is used; the options
    of DDS-2D."""


@dataclass(frozen=True)
class DiffusionBlendPPConfig(DiffusionConfig, method="diffusionblend++"):
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
