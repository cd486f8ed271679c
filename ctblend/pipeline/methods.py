"""The method registry and ``reconstruct(method, y, A, prior, config)``.

Methods: ``fbp`` (FDK for a circular cone beam), ``fdk``, ``sirt``, ``tv``, ``fbp-unet``,
``dds`` (2D prior + ADMM TV-z), ``dds2d`` (2D prior + CG), ``diffusionblend`` and
``diffusionblend++``. Every diffusion method takes every data consistency (``consistency``);
``dds`` is the 2D prior with ``admm-tvz`` through the same path. Each is a (config class, function)
pair in :data:`REGISTRY`. ``y`` has the operator's range shape (``(Z, V, D)`` for a slice-wise
operator, ``(rows, V, cols)`` for a 3D one); the result has its domain shape ``(Z, H, W)``, in
[0, 1] units, not clipped. Every method but FBP-UNet (a network on 2D FBP slices) runs on 3D
operators too: the sampler and the data-consistency steps never assume independent slices.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import operators as ops

from ..priors.base import VolumePrior
from ..sampling import (
    ADMMTVz,
    CGConsistency,
    NoiseAwareConsistency,
    posterior_sample,
    posterior_samples,
)
from ..tv import tv_least_squares
from .configs import (
    DDS2DConfig,
    DDSConfig,
    DiffusionBlendConfig,
    DiffusionBlendPPConfig,
    DiffusionConfig,
    FBPConfig,
    FBPUNetConfig,
    FDKConfig,
    MethodConfig,
    SIRTConfig,
    TVConfig,
)

__all__ = [
    "METHODS",
    "PRIOR_OF_METHOD",
    "REGISTRY",
    "Method",
    "limited_angle",
    "method_config",
    "reconstruct",
]

Callback = Callable[..., Any]


@dataclass(frozen=True)
class Method:
    """A registered method: its config class, its function ``run(y, A, prior, config,
    callback) -> (x, record)`` and the prior it needs (a ``VolumePrior`` kind, ``fbp-unet`` or
    None)."""

    config: type[MethodConfig]
    run: Callable[[Tensor, ops.Operator, Any, Any, Callback | None], tuple[Tensor, dict]]
    prior: str | None = None


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


def _fbp(y, A, prior, cfg: FBPConfig, callback):
    if isinstance(A.proj_geom, ops.ConeGeometry):
        x, record = _fdk(y, A, prior, FDKConfig(filter=cfg.filter), callback)
        return x, {**record, "algorithm": "fdk"}
    return ops.fbp(A, y, filter=cfg.filter), {"nfe": 0}


def _fdk(y, A, prior, cfg: FDKConfig, callback):
    return ops.fdk(A, y, filter=cfg.filter, short_scan=cfg.short_scan), {"nfe": 0}


def _fbp_unet(y, A, prior, cfg: FBPUNetConfig, callback):
    x = prior.refine(ops.fbp(A, y, filter=cfg.filter))
    return x, {"nfe": 1, "network": getattr(prior, "name", "fbp-unet")}


def _sirt(y, A, prior, cfg: SIRTConfig, callback):
    callbacks = () if callback is None else (lambda k, x: callback(k, x) and False,)
    x = ops.sirt(A, y, cfg.iterations, min_constraint=0.0, max_constraint=1.0, callbacks=callbacks)
    return x, {"nfe": 0}


def _tv(y, A, prior, cfg: TVConfig, callback):
    return tv_least_squares(A, y, lam=cfg.lam, iterations=cfg.iterations, callback=callback), {
        "nfe": 0
    }


def _consistency(cfg: DiffusionConfig, A: ops.Operator):
    """The data-consistency strategy of a diffusion config."""
    if cfg.consistency == "admm-tvz":
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
    return CGConsistency(iterations=cfg.cg_iters, per_slice=cfg.consistency == "cg-slice")


def _diffusion(y, A, prior, cfg: DiffusionConfig, callback):
    if isinstance(cfg, DiffusionBlendPPConfig):
        prior = prior.with_policy(cfg.policy)
    options = {
        "nfe": cfg.nfe,
        "eta": cfg.eta,
        "schedule": prior.schedule,
        "clip_x0": cfg.clip_x0,
        "eps_from": cfg.eps_from,
        "callback": callback,
    }
    consistency = _consistency(cfg, A)
    if cfg.samples == 1:
        x, record = posterior_sample(prior, A, y, consistency, seed=cfg.seed, **options)
        return x, {**record, "seed": cfg.seed}
    seeds = tuple(range(cfg.seed, cfg.seed + cfg.samples))
    xs, record = posterior_samples(prior, A, y, consistency, seeds=seeds, **options)
    std = xs.std(dim=0, correction=1)
    return xs.mean(dim=0), {**record, "seed": cfg.seed, "samples": cfg.samples, "std": std}


REGISTRY: dict[str, Method] = {
    "fbp": Method(FBPConfig, _fbp),
    "fdk": Method(FDKConfig, _fdk),
    "sirt": Method(SIRTConfig, _sirt),
    "tv": Method(TVConfig, _tv),
    "fbp-unet": Method(FBPUNetConfig, _fbp_unet, "fbp-unet"),
    "dds": Method(DDSConfig, _diffusion, "slice2d"),
    "dds2d": Method(DDS2DConfig, _diffusion, "slice2d"),
    "diffusionblend": Method(DiffusionBlendConfig, _diffusion, "blend"),
    "diffusionblend++": Method(DiffusionBlendPPConfig, _diffusion, "blend++"),
}
METHODS = tuple(REGISTRY)
#: The ``VolumePrior`` kind each diffusion method needs.
PRIOR_OF_METHOD = {
    name: m.prior for name, m in REGISTRY.items() if m.prior not in (None, "fbp-unet")
}


def _method(method: str) -> Method:
    if method not in REGISTRY:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return REGISTRY[method]


def method_config(
    method: str, config: MethodConfig | Mapping[str, Any] | None = None
) -> MethodConfig:
    """The config of ``method``: ``config`` itself, built from a mapping of options (an option
    the method does not use is a one-line error naming both), or the defaults."""
    cls = _method(method).config
    if config is None:
        return cls()
    if isinstance(config, MethodConfig):
        if type(config) is not cls:
            raise ValueError(f"{method}: got a {type(config).__name__}; expected a {cls.__name__}")
        return config
    return cls.from_dict(config)


def _check_geometry(method: str, A: ops.Operator, cfg: MethodConfig) -> None:
    """Methods that need a kind of geometry say so before any work."""
    pg = A.proj_geom
    name = type(pg).__name__
    if method == "fdk" and not isinstance(pg, ops.ConeGeometry):
        raise ValueError(f"fdk: needs a circular cone geometry; this acquisition is {name}")
    if pg.ndim != 3:
        return
    if method == "fbp" and not isinstance(pg, ops.ConeGeometry):
        raise ValueError(f"fbp: no analytic reconstruction of a 3D {name}; use sirt or tv")
    if method == "fbp-unet":
        raise ValueError(
            f"fbp-unet: 2D-only (a network trained on FBP slices of a 2D protocol); this "
            f"acquisition is 3D ({name})"
        )
    if getattr(cfg, "consistency", None) == "cg-slice":
        raise ValueError(
            f"{method}: consistency=cg-slice solves slices independently, but a 3D {name} "
            "couples them; use cg or noise-aware"
        )


def _check_inputs(method: str, y: Tensor, A: ops.Operator, prior: Any) -> None:
    if not isinstance(y, Tensor):
        raise ValueError(f"y: expected a torch.Tensor, got {type(y).__name__}")
    if tuple(y.shape) != tuple(A.range_shape):
        raise ValueError(
            f"sinogram shape {tuple(y.shape)} does not match the operator's range {A.range_shape}"
        )
    if not bool(torch.isfinite(y).all()):
        raise ValueError("sinogram contains NaN or inf values")
    if len(A.domain_shape) != 3:
        raise ValueError(f"expected an operator with a (Z, H, W) domain, got {A.domain_shape}")
    needs = REGISTRY[method].prior
    if needs is not None and prior is None:
        raise ValueError(f"method {method!r} needs a trained prior (--prior CHECKPOINT)")
    if method in PRIOR_OF_METHOD:
        if getattr(prior, "kind", None) != needs:
            raise ValueError(
                f"method {method!r} needs a {needs!r} prior, "
                f"got a {getattr(prior, 'kind', None)!r} prior"
            )
        size = A.domain_shape[-1]
        if prior.image_size != size or A.domain_shape[-2] != size:
            raise ValueError(
                f"the prior was trained at {prior.image_size}×{prior.image_size}, "
                f"the volume has slices of {A.domain_shape[-2]}×{A.domain_shape[-1]}"
            )


def reconstruct(
    method: str,
    y: Tensor,
    A: ops.Operator,
    prior: VolumePrior | Any | None = None,
    config: MethodConfig | Mapping[str, Any] | None = None,
    *,
    callback: Callback | None = None,
    **options: Any,
) -> tuple[Tensor, dict]:
    """Reconstruct ``A.domain_shape`` from ``y`` (``A.range_shape``) with ``method``.

    ``config``: the method's config (or a mapping of its options, or None for the defaults);
    keyword ``options`` are a shorthand for a mapping (``nfe=50``), not to be combined with
    ``config``. ``callback`` is called at every step (iteration or NFE, see ``config.steps``).
    Returns the volume and a record ``{method, config, seed, nfe, seconds, ...}``; with
    ``samples`` = K > 1 the volume is the mean of K posterior samples and the record holds
    ``samples`` and ``std`` (the per-voxel sample standard deviation, a tensor of the volume's
    shape). Bad input fails before any heavy work.
    """
    entry = _method(method)
    if options and config is not None:
        raise ValueError(f"{method}: give options either as config or as keywords, not both")
    cfg = method_config(method, config if config is not None else options)
    _check_inputs(method, y, A, prior)
    _check_geometry(method, A, cfg)
    start = time.perf_counter()
    x, record = entry.run(y, A, prior, cfg, callback)
    return x, {
        "method": method,
        "config": cfg.to_dict(),
        "seed": None,
        **record,
        "seconds": time.perf_counter() - start,
    }
