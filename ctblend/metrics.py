"""Image-quality metrics of the benchmark protocol (scikit-image, data range 1).

Per-plane PSNR/SSIM: every 2D slice of the plane, mean ± std over the slices; axial = slices
along z, coronal = along y (rows), sagittal = along x (columns). Reconstructions are clipped
to [0, 1] first. TV-z = mean |x[z+1] − x[z]| (no wrap-around).

A slice reconstructed exactly (e.g. an all-air border row after clipping) has PSNR = ∞; such
slices are left out of the PSNR mean/std and counted in ``psnr_exact`` (SSIM keeps them, as 1).
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check(recon: np.ndarray, truth: np.ndarray) -> None:
    if recon.shape != truth.shape or recon.ndim != 3:
        raise ValueError(
            f"expected two (Z, H, W) volumes of one shape, got {recon.shape} and {truth.shape}"
        )


def plane_scores(recon, truth, plane: str) -> dict[str, float]:
    """PSNR/SSIM mean and std over the 2D slices of one plane."""
    r, t = np.clip(_numpy(recon), 0, 1), _numpy(truth)
    _check(r, t)
    axis = PLANES[plane]
    psnr, ssim = [], []
    for k in range(r.shape[axis]):
        a, b = np.take(r, k, axis=axis), np.take(t, k, axis=axis)
        if not np.array_equal(a, b):
            psnr.append(peak_signal_noise_ratio(b, a, data_range=1.0))
        win = min(7, *a.shape)
        win -= 1 - win % 2  # odd, at most 7, at most the slice's smaller side
        ssim.append(structural_similarity(b, a, data_range=1.0, win_size=win))
    psnr_a, ssim_a = np.asarray(psnr), np.asarray(ssim)
    exact = r.shape[axis] - len(psnr)
    return {
        "psnr": float(psnr_a.mean()) if len(psnr) else float("inf"),
        "psnr_std": float(psnr_a.std()) if len(psnr) else 0.0,
        "psnr_exact": exact,
        "ssim": float(ssim_a.mean()),
        "ssim_std": float(ssim_a.std()),
    }


def tv_z(x) -> float:
    """Mean over all voxels of |x[z+1] − x[z]|."""
    a = _numpy(x)
    return float(np.abs(np.diff(a, axis=0)).mean())


def volume_scores(recon, truth) -> dict[str, float]:
    """All protocol metrics: per-plane PSNR/SSIM (mean, std), volume PSNR, TV-z of both."""
    r, t = np.clip(_numpy(recon), 0, 1), _numpy(truth)
    _check(r, t)
    out: dict[str, float] = {}
    for plane in PLANES:
        for key, value in plane_scores(r, t, plane).items():
            out[f"{plane}_{key}"] = value
    out["volume_psnr"] = float(peak_signal_noise_ratio(t, r, data_range=1.0))
    out["tv_z"] = tv_z(r)
    out["tv_z_truth"] = tv_z(t)
    return out
