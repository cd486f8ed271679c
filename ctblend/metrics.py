"""Image-quality metrics of the benchmark protocol (scikit-image, data range 1).

Per-plane PSNR/SSIM: every 2D slice of the plane, mean ± std over the slices; axial = slices
along z, coronal = along y (rows), sagittal = along x (columns). Reconstructions are clipped
to [0, 1] first. Every slice counts: the MSE is floored at 1e-10, so a slice reconstructed
exactly scores 100 dB and a better reconstruction never scores lower.

Inside the body (``*_body``): the mask is truth > −500 HU (x > 524/4095) dilated by 3 voxels
in 3D (a Euclidean ball of radius 3); per slice, PSNR from the MSE over the mask's pixels and
SSIM as the mean of the SSIM map over them; slices with fewer than 50 mask pixels are left out
(NaN when no slice is left). TV-z = mean |x[z+1] − x[z]| (no wrap-around).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import binary_dilation
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}
MSE_FLOOR = 1e-10
BODY_HU = -500.0
BODY_DILATION = 3
BODY_MIN_PIXELS = 50


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check(recon: np.ndarray, truth: np.ndarray) -> None:
    if recon.shape != truth.shape or recon.ndim != 3:
        raise ValueError(
            f"expected two (Z, H, W) volumes of one shape, got {recon.shape} and {truth.shape}"
        )


def psnr(mse: float) -> float:
    """PSNR in dB at data range 1 of a mean squared error, floored at ``MSE_FLOOR`` (100 dB)."""
    return float(10.0 * np.log10(1.0 / max(mse, MSE_FLOOR)))


def body_mask(truth) -> np.ndarray:
    """(Z, H, W) bool: truth > −500 HU in protocol units, dilated by a ball of radius 3 voxels."""
    t = _numpy(truth)
    if t.ndim != 3:
        raise ValueError(f"expected a (Z, H, W) volume, got shape {t.shape}")
    r = np.arange(-BODY_DILATION, BODY_DILATION + 1)
    ball = (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) <= (
        BODY_DILATION**2
    )
    return binary_dilation(t > (BODY_HU + 1024.0) / 4095.0, structure=ball)


def _ssim(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """scikit-image's SSIM of slice ``a`` against ``b`` (border-cropped mean) and its map."""
    win = min(7, *a.shape)
    win -= 1 - win % 2  # odd, at most 7, at most the slice's smaller side
    mean, smap = structural_similarity(b, a, data_range=1.0, win_size=win, full=True)
    return float(mean), smap


def _stats(values: list[float], name: str) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if not a.size:
        return {name: float("nan"), f"{name}_std": float("nan")}
    return {name: float(a.mean()), f"{name}_std": float(a.std())}


def plane_scores(recon, truth, plane: str, mask=None) -> dict[str, float]:
    """PSNR/SSIM mean and std over the 2D slices of one plane; with a (Z, H, W) ``mask``
    also ``psnr_body``/``ssim_body`` (and their std) over the slices with >= 50 mask pixels."""
    r, t = np.clip(_numpy(recon), 0, 1), _numpy(truth)
    _check(r, t)
    axis = PLANES[plane]
    psnr_all, ssim_all, psnr_body, ssim_body = [], [], [], []
    for k in range(r.shape[axis]):
        a, b = np.take(r, k, axis=axis), np.take(t, k, axis=axis)
        err = (a - b) ** 2
        ssim_mean, smap = _ssim(a, b)
        psnr_all.append(psnr(float(err.mean())))
        ssim_all.append(ssim_mean)
        if mask is not None:
            m = np.take(mask, k, axis=axis)
            if m.sum() >= BODY_MIN_PIXELS:
                psnr_body.append(psnr(float(err[m].mean())))
                ssim_body.append(float(smap[m].mean()))
    out = {**_stats(psnr_all, "psnr"), **_stats(ssim_all, "ssim")}
    if mask is not None:
        out.update(_stats(psnr_body, "psnr_body") | _stats(ssim_body, "ssim_body"))
    return out


def tv_z(x) -> float:
    """Mean over all voxels of |x[z+1] − x[z]|."""
    a = _numpy(x)
    return float(np.abs(np.diff(a, axis=0)).mean())


def volume_scores(recon, truth) -> dict[str, float]:
    """All protocol metrics: per-plane PSNR/SSIM (mean, std) over every slice and inside the
    body, volume PSNR, TV-z of both."""
    r, t = np.clip(_numpy(recon), 0, 1), _numpy(truth)
    _check(r, t)
    mask = body_mask(t)
    out: dict[str, float] = {}
    for plane in PLANES:
        for key, value in plane_scores(r, t, plane, mask).items():
            out[f"{plane}_{key}"] = value
    out["volume_psnr"] = psnr(float(((r - t) ** 2).mean()))
    out["tv_z"] = tv_z(r)
    out["tv_z_truth"] = tv_z(t)
    return out


def uncertainty_scores(recon, std, truth) -> dict[str, float]:
    """How well a per-voxel standard deviation ``std`` of posterior samples predicts the error of
    their mean ``recon`` (clipped to [0, 1]) inside the body of ``truth``: ``std_body`` (mean std),
    ``std_error_spearman`` (Spearman rank correlation of std and |error|) and ``within_2std``
    (the fraction of body voxels with |error| <= 2 std)."""
    r, s, t = np.clip(_numpy(recon), 0, 1), _numpy(std), _numpy(truth)
    _check(r, t)
    _check(s, t)
    mask = body_mask(t)
    if not mask.any():
        nan = float("nan")
        return {"std_body": nan, "std_error_spearman": nan, "within_2std": nan}
    err, sd = np.abs(r - t)[mask], s[mask]
    rho = spearmanr(sd, err).statistic if np.ptp(sd) > 0 and np.ptp(err) > 0 else float("nan")
    return {
        "std_body": float(sd.mean()),
        "std_error_spearman": float(rho),
        "within_2std": float((err <= 2 * sd).mean()),
    }
