"""Shipped networks: ``ctblend/weights/<name>/`` (priors and FBP-UNets) and prior paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ctblend.priors.loading import resolve_name, shipped_folder, weights_dir

__all__ = [
    "SHIPPED_PRIOR",
    "load_network",
    "resolve_prior",
    "shipped_fbp_unet",
    "shipped_name",
    "shipped_prior",
    "weights_dir",
]

#: The DiffusionBlend++ prior the demo, ``recon`` and ``sample`` use by default.
SHIPPED_PRIOR = "blendpp_cpu128"
#: Folder base name (``<base>_<scale>``) of the shipped prior of each kind.
SHIPPED_BASE = {"blend++": "blendpp", "blend": "blend", "slice2d": "slice2d"}


def shipped_name(kind: str, scale: str, protocol: str | None = None) -> str:
    """The folder name of the shipped network of a prior ``kind`` (or ``fbp-unet`` for a
    ``protocol``) at a scale name: ``blendpp_cpu128``, ``fbpunet_cpu128_svct8``."""
    if kind == "fbp-unet":
        return f"fbpunet_{scale}_{protocol}"
    return f"{SHIPPED_BASE[kind]}_{scale}"


def shipped_prior(name: str = SHIPPED_PRIOR) -> Path | None:
    """The shipped folder ``ctblend/weights/<name>`` if it is installed, else None."""
    return shipped_folder(name)


def shipped_fbp_unet(protocol: str | None, size: int) -> Path | None:
    """The shipped FBP-UNet folder for ``protocol`` at ``size``² (``fbpunet_cpu128_svct8``), or
    None when none is shipped for them."""
    from ctblend.data.scaling import SCALES

    if protocol is None:
        return None
    scale = next((name for name, n in SCALES.items() if n == size), str(size))
    return shipped_prior(shipped_name("fbp-unet", scale, protocol))


def resolve_prior(path_or_name: str | os.PathLike) -> Path:
    """A checkpoint path as given, or the shipped network of that name when no such path
    exists (a one-line error naming the shipped ones when neither)."""
    return resolve_name(path_or_name)


def load_network(
    method: str,
    prior: str | os.PathLike | None,
    device: Any,
    precision: str = "auto",
    *,
    protocol: str | None = None,
    size: int = 128,
    nfe: int | None = None,
) -> tuple[Any, Path | None]:
    """(network, its folder) that ``method`` needs — (None, None) for one without: ``prior`` (a
    folder or a shipped name), else the shipped network: for ``fbp-unet`` the one of
    ``protocol`` at ``size``² (as the demo picks it), for ``diffusionblend++`` the shipped prior.
    A missing, mismatched or unreadable network, or ``nfe`` beyond the prior's timesteps
    (checked from its record, before its weights are read), is a one-line error."""
    from ctblend.pipeline.methods import PRIOR_OF_METHOD
    from ctblend.priors.loading import load_prior, read_spec

    if method == "fbp-unet":
        from ctblend.baselines.fbp_unet import FBPUNet

        path = resolve_prior(prior) if prior else shipped_fbp_unet(protocol, size)
        if path is None:
            raise ValueError(
                f"method 'fbp-unet': no FBP-UNet is shipped for {protocol or 'this acquisition'} "
                f"at {size}²; expected --prior FOLDER (train one with `ctblend train-fbp-unet`)"
            )
        return FBPUNet.load(path, device=device), path
    if method not in PRIOR_OF_METHOD:
        return None, None
    if prior:
        path = resolve_prior(prior)
    elif method == "diffusionblend++" and shipped_prior() is not None:
        path = shipped_prior()
    else:
        raise ValueError(
            f"method {method!r} needs a trained {PRIOR_OF_METHOD[method]!r} prior: pass "
            "--prior CHECKPOINT (no shipped prior is installed for it)"
        )
    steps = read_spec(path).schedule.num_timesteps
    if nfe is not None and not 1 <= nfe <= steps:
        raise ValueError(
            f"{method}: option nfe={nfe}; expected an integer in [1, {steps}] (the diffusion "
            f"timesteps of {path.name})"
        )
    return load_prior(path, PRIOR_OF_METHOD[method], device=device, precision=precision), path
