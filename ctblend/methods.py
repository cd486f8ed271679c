"""One entry point for every reconstruction method: ``reconstruct(method, y, A, prior, **config)``.

Methods: ``fbp``, ``sirt``, ``tv``, ``fbp-unet``, ``dds`` (2D prior + ADMM TV-z), ``dds2d``
(2D prior + CG), ``diffusionblend`` and ``diffusionblend++``. All take slice-wise measurements
``y`` ``(Z, V, D)`` of a ``(Z, H, W)`` volume in [0, 1] units and return ``(Z, H, W)`` in the
same units (not clipped) plus a record of what was run.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import operators as ops

from .priors.base import VolumePrior
from .sampling import ADMMTVz, CGConsistency, NoiseAwareConsistency, SamplerConfig, posterior_sample
from .tv import tv_least_squares

PRIOR_OF_METHOD = {
    "dds": "slice2d",
    "dds2d": "slice2d",
    "diffusionblend": "blend",
    "diffusionblend++": "blend++",
}
METHODS = ("fbp", "sirt", "tv", "fbp-unet", "dds", "dds2d", "diffusionblend", "diffusionblend++")


@dataclass(frozen=True)
class DiffusionConfig:
    """Knobs of the diffusion methods (paper defaults; DDS uses 100 NFE)."""

    nfe: int = 200
    eta: float = 0.85
    cg_iters: int = 5
    seed: int = 0
    consistency: str = "cg"  # "cg", "cg-slice" (per-slice inner products), "noise-aware"
    gamma: float = 1.0  # noise-aware weight
    rho: float = 10.0  # DDS ADMM
    admm_iterations: int = 3  # DDS: ADMM iterations per step
    admm_persistent: bool = False  # carry z, w across steps (with admm_iterations=1: DDS code)
    lam: float | None = None  # DDS TV-z weight; None → 0.04 (sparse view) / 0.4 (limited angle)
    partition: str = "adjacency+cross"  # "fixed", "adjacency", "adjacency+cross" (blend++ only)
    cross_every: int = 2

    def __post_init__(self) -> None:
        for name, low in (("nfe", 1), ("cg_iters", 0), ("admm_iterations", 1), ("cross_every", 1)):
            _check_at_least(name, getattr(self, name), low)
        for name in ("eta", "gamma", "rho"):
            _check_at_least(name, getattr(self, name), 0.0)
        if self.lam is not None:
            _check_at_least("lam", self.lam, 0.0)


def _check_at_least(name: str, value, low: float) -> None:
    """A one-line ValueError unless ``value`` is a number >= ``low`` (an int where ``low`` is)."""
    kind = int if isinstance(low, int) else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < low:
        expected = f"an integer >= {low}" if kind is int else f"a number >= {low}"
        raise ValueError(f"option {name}={value!r}; expected {expected}")


def _check_inputs(method: str, y: Tensor, A: ops.Operator, prior: VolumePrior | None) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if not isinstance(y, Tensor):
        raise ValueError(f"y: expected a torch.Tensor, got {type(y).__name__}")
    if tuple(y.shape) != tuple(A.range_shape):
        raise ValueError(
            f"sinogram shape {tuple(y.shape)} does not match the operator's range {A.range_shape}"
        )
    if not bool(torch.isfinite(y).all()):
        raise ValueError("sinogram contains NaN or inf values")
    if len(A.domain_shape) != 3:
        raise ValueError(
            f"expected a slice-wise operator with a (Z, H, W) domain, got {A.domain_shape}"
        )
    if method in PRIOR_OF_METHOD or method == "fbp-unet":
        if prior is None:
            raise ValueError(f"method {method!r} needs a trained prior (--prior CHECKPOINT)")
    if method in PRIOR_OF_METHOD:
        expected = PRIOR_OF_METHOD[method]
        if getattr(prior, "kind", None) != expected:
            raise ValueError(
                f"method {method!r} needs a {expected!r} prior, "
                f"got a {getattr(prior, 'kind', None)!r} prior"
            )
        size = A.domain_shape[-1]
        if prior.image_size != size or A.domain_shape[-2] != size:
            raise ValueError(
                f"the prior was trained at {prior.image_size}×{prior.image_size}, "
                f"the volume has slices of {A.domain_shape[-2]}×{A.domain_shape[-1]}"
            )


def limited_angle(A: ops.Operator) -> bool:
    """Whether the views cover less than 180°, each view counted with its share of the arc
    (span + mean spacing): svct4/6/8 cover 180°, lact90 covers 90°. Picks DDS's default λ."""
    angles = sorted(float(a) for a in getattr(A.proj_geom, "angles", ()) or ())
    if not angles:
        return False
    if len(angles) == 1:
        return True
    span = angles[-1] - angles[0]
    return span + span / (len(angles) - 1) < math.pi * (1 - 1e-6)


def _consistency(method: str, cfg: DiffusionConfig, A: ops.Operator):
    if method == "dds":
        lam = cfg.lam if cfg.lam is not None else (0.4 if limited_angle(A) else 0.04)
        return ADMMTVz(
            rho=cfg.rho,
            lam=lam,
            iterations=cfg.cg_iters,
            admm_iterations=cfg.admm_iterations,
            persistent=cfg.admm_persistent,
        )
    if cfg.consistency == "noise-aware":
        return NoiseAwareConsistency(gamma=cfg.gamma, iterations=cfg.cg_iters)
    if cfg.consistency not in ("cg", "cg-slice"):
        raise ValueError(
            f"consistency: expected 'cg', 'cg-slice' or 'noise-aware', got {cfg.consistency!r}"
        )
    return CGConsistency(iterations=cfg.cg_iters, per_slice=cfg.consistency == "cg-slice")


def _with_partition(prior: VolumePrior, cfg: DiffusionConfig) -> VolumePrior:
    from .priors.partitions import PartitionPolicy

    policies = {
        "fixed": PartitionPolicy("fixed", 0),
        "adjacency": PartitionPolicy("random", 0),
        "adjacency+cross": PartitionPolicy("random", cfg.cross_every),
    }
    if cfg.partition not in policies:
        raise ValueError(f"partition: expected one of {', '.join(policies)}, got {cfg.partition!r}")
    if not hasattr(prior, "policy"):
        return prior
    clone = object.__new__(type(prior))
    clone.__dict__.update(prior.__dict__)
    clone.policy = policies[cfg.partition]
    return clone


def _diffusion(method: str, y, A, prior, callback=None, **config) -> tuple[Tensor, dict]:
    if method == "dds":
        config.setdefault("nfe", 100)
    cfg = DiffusionConfig(**config)
    if method == "diffusionblend++":
        prior = _with_partition(prior, cfg)
    sampler = SamplerConfig(nfe=cfg.nfe, eta=cfg.eta, seed=cfg.seed)
    x, record = posterior_sample(
        prior, A, y, _consistency(method, cfg, A), sampler, prior.schedule, callback=callback
    )
    record["config"] = dataclasses.asdict(cfg)
    record["seed"] = cfg.seed
    return x, record


def _fbp(method, y, A, prior, filter: str = "ram-lak"):  # noqa: A002
    return ops.fbp(A, y, filter=filter), {"config": {"filter": filter}, "nfe": 0}


def _sirt(method, y, A, prior, iterations: int = 200, callback=None):
    callbacks = () if callback is None else (lambda k, x: callback(k, x) and False,)
    x = ops.sirt(A, y, iterations, min_constraint=0.0, max_constraint=1.0, callbacks=callbacks)
    return x, {"config": {"iterations": iterations}, "nfe": 0}


def _tv(method, y, A, prior, lam: float = 0.01, iterations: int = 300, callback=None):
    x = tv_least_squares(A, y, lam=lam, iterations=iterations, callback=callback)
    return x, {"config": {"lam": lam, "iterations": iterations}, "nfe": 0}


def _fbp_unet(method, y, A, prior, filter: str = "ram-lak"):  # noqa: A002
    x = prior.refine(ops.fbp(A, y, filter=filter))
    return x, {
        "config": {"filter": filter, "network": getattr(prior, "name", "fbp-unet")},
        "nfe": 1,
    }


_REGISTRY: dict[str, Callable] = {
    "fbp": _fbp,
    "sirt": _sirt,
    "tv": _tv,
    "fbp-unet": _fbp_unet,
    "dds": _diffusion,
    "dds2d": _diffusion,
    "diffusionblend": _diffusion,
    "diffusionblend++": _diffusion,
}


def method_options(method: str) -> tuple[str, ...]:
    """The keyword options ``reconstruct`` accepts for ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if method in PRIOR_OF_METHOD:
        return tuple(f.name for f in dataclasses.fields(DiffusionConfig)) + ("callback",)
    params = inspect.signature(_REGISTRY[method]).parameters
    return tuple(name for name in params if name not in ("method", "y", "A", "prior"))


def method_steps(method: str, config: dict) -> int | None:
    """How often ``reconstruct(method, …, **config)`` calls its ``callback`` (the NFE of a
    diffusion method, the iterations of ``sirt``/``tv``), None for one-shot methods."""
    if method in PRIOR_OF_METHOD:
        return int(config.get("nfe", 100 if method == "dds" else DiffusionConfig.nfe))
    defaults = inspect.signature(_REGISTRY[method]).parameters
    if "callback" not in defaults:
        return None
    return int(config.get("iterations", defaults["iterations"].default))


def check_options(method: str, config: dict) -> None:
    """Fail (one-line ValueError) on an option ``method`` lacks or a value out of range, before
    any work: diffusion options through :class:`DiffusionConfig`, iterations >= 1, lam >= 0."""
    unknown = sorted(set(config) - set(method_options(method)))
    if unknown:
        raise ValueError(
            f"method {method!r} has no option {unknown[0]!r}; "
            f"its options: {', '.join(method_options(method)) or 'none'}"
        )
    values = {k: v for k, v in config.items() if k != "callback"}
    try:
        if method in PRIOR_OF_METHOD:
            DiffusionConfig(**values)
        if method in ("sirt", "tv") and "iterations" in values:
            _check_at_least("iterations", values["iterations"], 1)
        if method == "tv" and "lam" in values:
            _check_at_least("lam", values["lam"], 0.0)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"method {method!r}: {exc}") from None


def reconstruct(
    method: str, y: Tensor, A: ops.Operator, prior: VolumePrior | None = None, **config
) -> tuple[Tensor, dict]:
    """Reconstruct ``(Z, H, W)`` from ``y`` ``(Z, V, D)``; returns the volume and a record
    ``{method, config, seed, nfe, seconds, ...}``. Bad input fails before any heavy work."""
    _check_inputs(method, y, A, prior)
    check_options(method, config)
    start = time.perf_counter()
    x, record = _REGISTRY[method](method, y, A, prior, **config)
    record.update(method=method, seconds=time.perf_counter() - start)
    record.setdefault("seed", config.get("seed"))
    return x, record
