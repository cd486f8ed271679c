"""Shipped networks: ``ctblend/weights/<name>/`` (priors and FBP-UNets) and prior paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = [
    "SHIPPED_PRIOR",
    "load_network",
    "resolve_prior",
    "shipped_name",
    "shipped_prior",
    "weights_dir",
]

#: The DiffusionBlend++ prior the demo, ``recon`` and ``sample`` use by default.
SHIPPED_PRIOR = "blendpp_cpu128"
#: Folder base name (``<base>_<scale>``) of the shipped prior of each kind.
SHIPPED_BASE = {"blend++": "blendpp", "blend": "blend", "slice2d": "slice2d"}


def weights_dir() -> Path:
    """The folder of shipped networks (``ctblend/weights``)."""
    return Path(__file__).resolve().parent.parent / "weights"


def shipped_name(kind: str, scale: str, protocol: str | None = None) -> str:
    """The folder name of the shipped network of a prior ``kind`` (or ``fbp-unet`` for a
    ``protocol``) at a scale name: ``blendpp_cpu128``, ``fbpunet_cpu128_svct8``."""
    if kind == "fbp-unet":
        return f"fbpunet_{scale}_{protocol}"
    return f"{SHIPPED_BASE[kind]}_{scale}"


def shipped_prior(name: str = SHIPPED_PRIOR) -> Path | None:
    """The shipped folder ``ctblend/weights/<name>`` if it is installed, else None."""
    folder = weights_dir() / name
    return folder if (folder / "config.json").is_file() else None


def resolve_prior(path_or_name: str | os.PathLike) -> Path:
    """A checkpoint path as given, or the shipped prior of that name when no such path exists."""
    path = Path(path_or_name)
    if not path.exists():
        shipped = shipped_prior(str(path_or_name)) if len(path.parts) == 1 else None
        if shipped is None:
            raise FileNotFoundError(
                f"{path}: no such checkpoint folder (and no shipped prior of that name in "
                f"{weights_dir()})"
            )
        return shipped
    return path


def load_network(
    method: str, prior: str | os.PathLike | None, device: Any, precision: str = "auto"
) -> tuple[Any, Path | None]:
    """(network, its folder) that ``method`` needs — (None, None) for one without: ``prior`` (a
    folder or a shipped name), else for ``diffusionblend++`` the shipped prior. A missing,
    mismatched or unreadable network is a one-line error."""
    from ctblend.pipeline.methods import PRIOR_OF_METHOD
    from ctblend.priors.base import precision_options
    from ctblend.priors.loading import load_prior

    if method == "fbp-unet":
        from ctblend.baselines.fbp_unet import FBPUNet

        if not prior:
            raise ValueError("method 'fbp-unet' needs --prior FOLDER (an FBP-UNet network)")
        path = resolve_prior(prior)
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
    options = precision_options(precision, device)
    return load_prior(path, kind=PRIOR_OF_METHOD[method], device=device, **options), path
