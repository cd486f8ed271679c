"""FBP/FDK against scikit-image and analytic phantoms."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, resize

import operators as ops

N = 129  # odd, so scikit-image's detector centre (N // 2) coincides with ours ((N - 1) / 2)


@pytest.fixture(scope="module")
def shepp() -> np.ndarray:
    return resize(shepp_logan_phantom(), (N, N), anti_aliasing=True).astype(np.float64)


def _inside(radius: float, n: int = N) -> np.ndarray:
    return np.hypot(*(np.mgrid[:n, :n] - (n - 1) / 2)) < radius


def _rel(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.linalg.norm((a - b)[mask]) / np.linalg.norm(b[mask]))


@pytest.fixture(scope="module")
def parallel_recon(shepp):
    A = ops.Operator(ops.volume((N, N)), ops.parallel(360, N))
    y = A(torch.tensor(shepp))
    return A, y, ops.fbp(A, y).numpy()


@pytest.mark.slow
def test_parallel_fbp_of_shepp_logan():
    """scikit-image's phantom near its native 400², 360 views (projected by ASTRA)."""
    pytest.importorskip("astra")
    n = 399
    image = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True).astype(np.float64)
    A = ops.Operator(ops.volume((n, n)), ops.parallel(360, n), backend="astra")
    y = A(torch.tensor(image))
    rec = ops.fbp(A, y).numpy()
    reference = iradon(y.numpy().T, np.degrees(A.proj_geom.angles), circle=True, filter_name="ramp")
    mask = _inside(n / 2 - 1, n)
    assert _rel(rec, image, mask) <= 0.10
    assert _rel(rec, reference, mask) <= 0.02


def test_uniform_disk_reconstructs_to_one():
    disk = (_inside(40) * 1.0).astype(np.float64)
    A = ops.Operator(ops.volume((N, N)), ops.parallel(360, 2 * N))
    rec = ops.fbp(A, A(torch.tensor(disk))).numpy()[_inside(32)]
    assert abs(rec.mean() - 1) <= 0.02
    assert np.abs(rec - 1).max() <= 0.03


@pytest.mark.parametrize("window", ops.FILTERS)
def test_windows_keep_the_dc_gain(window):
    disk = (_inside(40) * 1.0).astype(np.float64)
    A = ops.Operator(ops.volume((N, N)), ops.parallel(180, 2 * N))
    rec = ops.fbp(A, A(torch.tensor(disk)), filter=window).numpy()
    assert abs(rec[_inside(30)].mean() - 1) <= 0.02


def test_window_response_at_nyquist():
    h = {w: ops.ramp_filter(64, 1.0, w).numpy() for w in ops.FILTERS}
    nyq = len(h["ram-lak"]) // 2
    freq = np.abs(np.fft.fftfreq(len(h["ram-lak"])))
    # the spatially discretised ramp is |f| up to a small low-frequency offset (Kak & Slaney)
    np.testing.assert_allclose(h["ram-lak"][1:nyq], freq[1:nyq], atol=5e-3)
    assert h["ram-lak"][0] > 0  # no DC hole: the spatial kernel keeps the mean
    ratio = {w: h[w][nyq] / h["ram-lak"][nyq] for w in ops.FILTERS}
    assert ratio["hann"] == pytest.approx(0.0, abs=1e-9)
    assert ratio["hamming"] == pytest.approx(0.08, rel=1e-6)
    assert ratio["shepp-logan"] == pytest.approx(2 / math.pi, rel=1e-6)
    assert ratio["cosine"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("curved", [False, True])
@pytest.mark.parametrize("short", [False, True])
def test_fan_fbp_matches_parallel(shepp, parallel_recon, curved, short):
    src, det = 2.0 * N, 1.0 * N
    mag = (src + det) / src
    make = ops.fan_arc if curved else ops.fan_flat
    half_fan = (N / (src + det)) if curved else math.atan(N / (src + det))
    angles = np.linspace(0, math.pi + 2 * half_fan, 300, endpoint=False) if short else 360
    B = ops.Operator(ops.volume((N, N)), make(angles, 2 * N, mag, src, det))
    rec = ops.fbp(B, B(torch.tensor(shepp))).numpy()
    _, _, reference = parallel_recon
    inner = (shepp > 0.15) & _inside(N / 2 - 8)
    assert _rel(rec, reference, inner) <= 0.05
    disk = (_inside(40) * 1.0).astype(np.float64)
    rec_disk = ops.fbp(B, B(torch.tensor(disk))).numpy()
    assert abs(rec_disk[_inside(30)].mean() - 1) <= 0.02


def test_parker_weights_sum_to_one_on_redundant_rays():
    half_fan = 0.3
    beta = np.linspace(0, math.pi + 2 * half_fan, 2001)
    gamma = np.linspace(-half_fan, half_fan, 41)[1:-1]  # pixel centres lie inside the fan
    w = ops.parker_weights(beta, gamma, half_fan)
    for j, g in enumerate(gamma):
        for i in range(0, len(beta), 97):
            b2 = beta[i] + math.pi - 2 * g
            if b2 <= beta[-1]:
                k = np.argmin(np.abs(beta - b2))
                mirror = np.argmin(np.abs(gamma + g))
                assert w[i, j] + w[k, mirror] == pytest.approx(1.0, abs=0.02)


@pytest.mark.slow
def test_fdk_of_a_ball():
    n, r = 40, 12.0
    g = np.mgrid[:n, :n, :n] - (n - 1) / 2
    dist = np.sqrt((g**2).sum(0))
    ball = torch.tensor((dist <= r).astype(np.float64))
    A = ops.Operator(ops.volume((n, n, n)), ops.cone(90, (60, 80), 1.0, 80.0, 40.0))
    assert A.backend.name in ("joseph", "astra")
    rec = ops.fdk(A, A(ball)).numpy()
    inner = dist < r - 3
    assert abs(rec[inner].mean() - 1) <= 0.05
    assert np.abs(rec[dist > r + 3]).mean() <= 0.05


def test_fbp_batched_slices_equal_single_slices(shepp):
    A = ops.Operator(ops.volume((2, N, N)), ops.parallel(30, 2 * N))
    x = torch.tensor(np.stack([shepp, shepp.T]))
    rec = ops.fbp(A, A(x))
    single = ops.Operator(ops.volume((N, N)), ops.parallel(30, 2 * N))
    torch.testing.assert_close(rec[1], ops.fbp(single, single(x[1])))


def test_fbp_rejects_cone_and_fdk_rejects_parallel():
    cone = ops.Operator(ops.volume((4, 8, 8)), ops.cone(4, (6, 6), 1.0, 30.0, 10.0))
    with pytest.raises(ValueError, match="fdk"):
        ops.fbp(cone, torch.zeros(cone.range_shape))
    par = ops.Operator(ops.volume((8, 8)), ops.parallel(4, 12))
    with pytest.raises(ValueError, match="cone"):
        ops.fdk(par, torch.zeros(par.range_shape))
    with pytest.raises(ValueError, match="filter"):
        ops.fbp(par, torch.zeros(par.range_shape), filter="butterworth")


def test_fbp_weights_each_view_of_a_non_uniform_angle_set():
    """Analytic sinogram of a disk (chord lengths), 120 views over [0, π/2), 30 over [π/2, π)."""
    r = 40.0
    angles = np.concatenate(
        [
            np.linspace(0, math.pi / 2, 120, endpoint=False),
            np.linspace(math.pi / 2, math.pi, 30, endpoint=False),
        ]
    )
    A = ops.Operator(ops.volume((N, N)), ops.parallel(angles, 2 * N))
    s = np.arange(2 * N) - (2 * N - 1) / 2
    chord = 2 * np.sqrt(np.clip(r**2 - s**2, 0, None))
    y = torch.tensor(np.broadcast_to(chord, A.range_shape).copy())
    rec = ops.fbp(A, y).numpy()[_inside(32)]
    assert abs(rec.mean() - 1) <= 0.02


def test_geometry_tables_are_built_once_per_geometry(monkeypatch):
    fbp_module = importlib.import_module("operators.fbp")  # the name fbp is the function
    A = ops.Operator(ops.volume((3, 16, 16)), ops.fan_flat(12, 24, 1.0, 40.0, 20.0))
    y = torch.rand(2, *A.range_shape)
    builds = []
    build = fbp_module._build_plan
    monkeypatch.setattr(fbp_module, "_build_plan", lambda *a: builds.append(a) or build(*a))
    monkeypatch.setattr(fbp_module, "_plans", fbp_module.OrderedDict())
    first = ops.fbp(A, y)
    torch.testing.assert_close(ops.fbp(A, y), first)
    assert len(builds) == 1
    monkeypatch.setattr(fbp_module, "_PLAN_CACHE_BYTES", 0)  # too big to keep: rebuilt
    fbp_module._plans.clear()
    ops.fbp(A, y)
    ops.fbp(A, y)
    assert len(builds) == 3 and not fbp_module._plans
