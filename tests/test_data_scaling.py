"""Protocol scaling: HU ↔ [0, 1], in-plane resampling, z padding/cropping, body mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.measure import block_reduce

from ctblend.data import scaling
from ctblend.io import DataError


def test_constants() -> None:
    assert (scaling.HU_MIN, scaling.HU_MAX) == (-1024, 3071)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_hu_to_unit_values(kind: str) -> None:
    hu = np.array([-2048, -1024, 0, 1000, 3071, 5000], dtype=np.int16)
    expected = np.array([0, 0, 1024 / 4095, 2024 / 4095, 1, 1])
    x = scaling.hu_to_unit(torch.from_numpy(hu) if kind == "torch" else hu)
    assert x.dtype in (np.float32, torch.float32)
    np.testing.assert_allclose(np.asarray(x), expected, rtol=0, atol=1e-7)


def test_unit_to_hu_inverts_on_unit_interval() -> None:
    x = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    hu = scaling.unit_to_hu(x)
    np.testing.assert_allclose(hu, x.astype(np.float64) * 4095 - 1024, atol=1e-3)
    np.testing.assert_allclose(scaling.hu_to_unit(hu), x, atol=1e-6)
    np.testing.assert_allclose(scaling.unit_to_hu(torch.from_numpy(x)).numpy(), hu, atol=1e-3)


@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_is_block_mean(factor: int) -> None:
    vol = np.random.default_rng(1).random((3, 16, 24)).astype(np.float32)
    expected = block_reduce(vol.astype(np.float64), (1, factor, factor), np.mean)
    np.testing.assert_allclose(scaling.downsample_inplane(vol, factor), expected, atol=1e-6)
    out = scaling.downsample_inplane(torch.from_numpy(vol)[None], factor)
    assert out.shape == (1, 3, 16 // factor, 24 // factor)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6)


def test_downsample_rejects_non_divisible() -> None:
    with pytest.raises(DataError, match="dividing both sizes"):
        scaling.downsample_inplane(np.zeros((1, 10, 10)), 3)


def test_to_scale_named_scales() -> None:
    vol = np.random.default_rng(2).random((2, 256, 256)).astype(np.float32)
    cpu = scaling.to_scale(vol, "cpu128")
    assert cpu.shape == (2, 128, 128)
    np.testing.assert_allclose(
        cpu, block_reduce(vol.astype(np.float64), (1, 2, 2), np.mean), atol=1e-6
    )
    np.testing.assert_array_equal(scaling.to_scale(vol, "paper256"), vol)
    np.testing.assert_allclose(
        scaling.to_scale(vol, 64),
        block_reduce(vol.astype(np.float64), (1, 4, 4), np.mean),
        atol=1e-6,
    )
    with pytest.raises(DataError, match="cpu128"):
        scaling.to_scale(vol, "cpu64")


def test_resize_non_integer_is_anti_aliased() -> None:
    # A one-pixel checkerboard has no content below Nyquist: an anti-aliased shrink gives ~0.5.
    board = (np.indices((256, 256)).sum(axis=0) % 2).astype(np.float32)[None]
    out = scaling.resize_inplane(board, 100)
    assert out.shape == (1, 100, 100) and out.dtype == np.float32
    assert abs(float(out.mean()) - 0.5) < 0.01 and float(out.std()) < 0.05
    # A smooth ramp survives: value at each output pixel centre ≈ the ramp there.
    h = 90
    ramp = np.tile(np.linspace(0, 1, h, dtype=np.float32)[:, None], (1, h))[None]
    small = scaling.resize_inplane(torch.from_numpy(ramp), (60, 60))
    assert isinstance(small, torch.Tensor) and small.shape == (1, 60, 60)
    centres = (np.arange(60) + 0.5) * h / 60 - 0.5
    np.testing.assert_allclose(small[0, 5:-5, 30].numpy(), centres[5:-5] / (h - 1), atol=2e-3)
    np.testing.assert_allclose(
        scaling.resize_inplane(np.full((2, 50, 50), 0.3), 37), 0.3, atol=1e-6
    )


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_pad_and_crop_z(kind: str) -> None:
    vol = np.arange(10 * 2 * 3, dtype=np.float32).reshape(10, 2, 3)
    x = torch.from_numpy(vol) if kind == "torch" else vol
    padded, z = scaling.pad_z(x, 9)
    assert z == 10 and tuple(padded.shape) == (18, 2, 3)
    padded = np.asarray(padded)
    np.testing.assert_array_equal(padded[:10], vol)
    for k in range(10, 18):
        np.testing.assert_array_equal(padded[k], vol[9])
    np.testing.assert_array_equal(
        np.asarray(scaling.crop_z(x if kind == "numpy" else torch.from_numpy(padded), z)), vol
    )
    same, z9 = scaling.pad_z(x[:9], 3)
    assert z9 == 9 and tuple(same.shape) == (9, 2, 3)


def test_pad_z_batched_torch() -> None:
    vol = torch.arange(2 * 4 * 2 * 2, dtype=torch.float32).reshape(2, 4, 2, 2)  # (B, Z, H, W)
    padded, z = scaling.pad_z(vol, 3)
    assert z == 4 and padded.shape == (2, 6, 2, 2)
    assert torch.equal(padded[:, 4], vol[:, 3]) and torch.equal(padded[:, 5], vol[:, 3])
    assert torch.equal(scaling.crop_z(padded, z), vol)
    with pytest.raises(DataError, match="positive int"):
        scaling.pad_z(vol, 0)
    with pytest.raises(DataError, match="1 <= z <= Z"):
        scaling.crop_z(vol, 5)


def test_body_mask_and_background() -> None:
    vol = np.zeros((4, 64, 64), np.float32)
    yy, xx = np.indices((64, 64))
    body = (yy - 30) ** 2 / 20**2 + (xx - 32) ** 2 / 26**2 < 1
    lung = (yy - 28) ** 2 + (xx - 22) ** 2 < 6**2
    vol[:, body] = scaling.hu_to_unit(40.0)
    vol[:, lung] = scaling.hu_to_unit(-850.0)
    vol[:, 58:60, 10:54] = scaling.hu_to_unit(300.0)  # a separate "table" below the body
    mask = scaling.body_mask(vol)
    assert mask[:, body].all(), "the body, lungs included, is inside the mask"
    assert not mask[:, 58:60, 10:54].any(), "the table is not part of the body"
    assert not mask[:, 0, 0].any()
    cleaned = scaling.zero_background(vol, mask)
    assert (cleaned[:, 58:60, 10:54] == 0).all()
    np.testing.assert_array_equal(cleaned[:, body], vol[:, body])
    np.testing.assert_array_equal(scaling.zero_background(torch.from_numpy(vol)).numpy(), cleaned)
