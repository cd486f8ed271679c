"""Figures: the panels show the right planes, errors and profiles, in one shared window."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from skimage.metrics import peak_signal_noise_ratio

from ctblend.figures import plot_loss_curve, plot_panels, plot_sinogram


@pytest.fixture
def volumes():
    rng = np.random.default_rng(0)
    truth = rng.random((5, 12, 16), dtype=np.float32)
    noisy = truth + 0.05 * rng.standard_normal(truth.shape).astype(np.float32)
    blurred = torch.from_numpy((truth + np.roll(truth, 1, axis=0)) / 2)  # torch input works too
    return {"ground truth": truth, "noisy": noisy, "blurred": blurred}


def _image(ax) -> np.ndarray:
    (img,) = ax.get_images()
    return np.asarray(img.get_array())


def test_panels_show_the_three_planes_errors_and_z_profile(volumes, tmp_path):
    path = tmp_path / "sub" / "panels.png"
    result = plot_panels(volumes, path, window=(0.2, 0.8), slices=(2, 7, 11))
    truth, noisy = volumes["ground truth"], volumes["noisy"]
    blurred = volumes["blurred"].numpy()
    ax = result.axes
    np.testing.assert_array_equal(_image(ax[("axial", "noisy")]), noisy[2])
    np.testing.assert_array_equal(_image(ax[("coronal", "noisy")]), noisy[:, 7, :])
    np.testing.assert_array_equal(_image(ax[("sagittal", "blurred")]), blurred[:, :, 11])
    np.testing.assert_allclose(_image(ax[("axial error", "noisy")]), noisy[2] - truth[2])
    np.testing.assert_allclose(
        _image(ax[("sagittal error", "blurred")]), blurred[:, :, 11] - truth[:, :, 11]
    )
    for plane in ("axial", "coronal", "sagittal"):
        for key in volumes:
            assert ax[(plane, key)].get_images()[0].get_clim() == (0.2, 0.8)
        assert ax[(f"{plane} error", "ground truth")].get_images() == []
        assert ax[(f"{plane} error", "noisy")].get_images()[0].get_clim() == pytest.approx(
            (-0.12, 0.12)
        )
    lines = {line.get_label(): line.get_ydata() for line in result.profile.get_lines()}
    np.testing.assert_array_equal(lines["noisy"], noisy[:, 7, 11])
    np.testing.assert_array_equal(lines["ground truth"], truth[:, 7, 11])
    psnr = peak_signal_noise_ratio(truth, np.clip(noisy, 0, 1), data_range=1.0)
    assert f"volume PSNR {psnr:.2f} dB" in ax[("axial", "noisy")].get_title()
    assert imread(path).ndim == 3
    assert [p.name for p in path.parent.iterdir()] == ["panels.png"]  # no temporary left


def test_panels_say_what_they_show(volumes, tmp_path):
    """Error rows name their plane; the grey bar gives the units and the window in HU
    (0.2 → 4095 · 0.2 − 1024 = −205 HU, 0.8 → 2252 HU), the error bar ±0.12 = ±491 HU."""
    result = plot_panels(volumes, tmp_path / "p.png", window=(0.2, 0.8), slices=(2, 7, 11))
    for plane, axis, index in (("axial", "z", 2), ("coronal", "y", 7), ("sagittal", "x", 11)):
        assert result.axes[(plane, "ground truth")].get_ylabel() == f"{plane}\n{axis} = {index}"
        assert result.axes[(f"{plane} error", "noisy")].get_ylabel() == f"{plane}\nerror"
    bars = [a.get_ylabel() for a in result.figure.axes if a not in result.axes.values()]
    assert "(HU + 1024) / 4095; window -205 to 2252 HU" in bars
    assert "volume − truth ((HU + 1024) / 4095; ±0.12 = ±491 HU)" in bars


def test_panels_without_truth_have_no_error_rows(volumes, tmp_path):
    result = plot_panels({"a": volumes["noisy"]}, tmp_path / "a.png")
    assert {row for row, _ in result.axes} == {"axial", "coronal", "sagittal"}
    assert result.slices == (2, 6, 8)  # the centre by default
    assert "PSNR" not in result.axes[("axial", "a")].get_title()


def test_panels_bad_input(volumes, tmp_path):
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError, match="different shapes"):
        plot_panels({"a": np.zeros((4, 8, 8)), "b": np.zeros((4, 8, 9))}, path)
    with pytest.raises(ValueError, match=r"expected \(Z, H, W\)"):
        plot_panels({"a": np.zeros((8, 8))}, path)
    with pytest.raises(ValueError, match="y=12 outside"):
        plot_panels(volumes, path, slices=(0, 12, 0))
    with pytest.raises(ValueError, match="window"):
        plot_panels(volumes, path, window=(1.0, 0.0))
    assert not path.exists()


def test_sinogram_view(tmp_path):
    y = np.arange(3 * 4 * 10, dtype=np.float32).reshape(3, 4, 10)
    fig = plot_sinogram(y, tmp_path / "s.png")
    left, right = fig.axes[0], fig.axes[2]  # axes[1] is the colour bar of the first panel
    np.testing.assert_array_equal(_image(left), y[1])
    np.testing.assert_array_equal(_image(right), y[:, 0, :])
    assert imread(tmp_path / "s.png").ndim == 3
    with pytest.raises(ValueError, match="slice_index 3"):
        plot_sinogram(y, tmp_path / "t.png", slice_index=3)


def test_loss_curve(tmp_path):
    csv_path = tmp_path / "loss.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "lr", "samples_per_s", "crop", "wall_time_s"])
        for step in range(1, 30):
            writer.writerow([step * 10, 1.0 / step, 1e-4, 10.0, 64, step])
    png = plot_loss_curve(csv_path, tmp_path / "out" / "loss.png")
    assert imread(png).ndim == 3
    with pytest.raises(ValueError, match="not found"):
        plot_loss_curve(tmp_path / "missing.csv", tmp_path / "x.png")
