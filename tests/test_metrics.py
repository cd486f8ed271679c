"""Protocol metrics against analytic values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctblend.metrics import plane_scores, tv_z, volume_scores


def test_psnr_of_a_constant_offset_is_analytic():
    truth = np.full((5, 9, 11), 0.4)
    recon = truth + 0.01
    scores = volume_scores(recon, truth)
    for plane in ("axial", "coronal", "sagittal"):
        assert scores[f"{plane}_psnr"] == pytest.approx(40.0)
        assert scores[f"{plane}_psnr_std"] == pytest.approx(0.0, abs=1e-9)
    assert scores["volume_psnr"] == pytest.approx(40.0)


def test_planes_slice_the_right_axis():
    truth = np.zeros((4, 8, 10))
    recon = truth.copy()
    recon[:, :, 0] = 0.1  # error only in sagittal slice x = 0
    sag = plane_scores(recon, truth, "sagittal")
    axial = plane_scores(recon, truth, "axial")
    # 9 of 10 sagittal slices are exact: left out of the mean, which is the one slice's PSNR
    assert sag["psnr_exact"] == 9 and sag["psnr"] == pytest.approx(20.0)
    assert axial["psnr"] == pytest.approx(-10 * math.log10(0.01 * 8 / 80))


def test_reconstruction_is_clipped_before_scoring():
    truth = np.full((3, 8, 8), 1.0)
    assert volume_scores(truth + 0.5, truth)["volume_psnr"] == math.inf


def test_tv_z_is_mean_absolute_slice_difference_without_wrap():
    x = np.zeros((3, 2, 2))
    x[0] = 1.0  # |x1 − x0| = 1, |x2 − x1| = 0; a wrap-around would add |x0 − x2| = 1
    assert tv_z(x) == pytest.approx(0.5)


def test_ssim_identity_and_shape_errors():
    rng = np.random.default_rng(0)
    x = rng.random((6, 16, 16))
    assert plane_scores(x, x, "coronal")["ssim"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one shape"):
        volume_scores(x, x[:5])
