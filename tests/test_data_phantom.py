"""The procedural CT phantom: units, determinism, anatomy in the documented axis convention."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import block_reduce

from ctblend.data.phantom import ct_phantom, phantom_spacing_mm
from ctblend.io import DataError


def unit(hu: float) -> float:
    return (hu + 1024) / 4095


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    return ct_phantom((24, 128, 128), seed=0)


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 64, 48), (24, 128, 128)])
def test_shape_dtype_range(shape: tuple[int, int, int]) -> None:
    x = ct_phantom(shape, seed=3)
    assert x.shape == shape and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert phantom_spacing_mm(shape)[0] == 2.5


def test_seeded(phantom: np.ndarray) -> None:
    np.testing.assert_array_equal(ct_phantom((24, 128, 128), seed=0), phantom)
    other = ct_phantom((24, 128, 128), seed=1)
    assert np.abs(other - phantom).mean() > 1e-3


def test_tissue_values(phantom: np.ndarray) -> None:
    assert (phantom[:, :4, :4] == 0).all() and (phantom[:, -4:, -4:] == 0).all(), "air is 0"
    inside = phantom > unit(-990)
    soft = phantom[inside & (phantom > unit(-50)) & (phantom < unit(100))]
    assert abs(float(np.median(soft)) - unit(40)) < 0.01, "soft tissue near water (0.25)"
    assert ((phantom > unit(-200)) & (phantom < unit(-50))).mean() > 0.02, "fat present"
    assert (phantom[inside] < unit(-700)).mean() > 0.1, "lungs present"
    bone = phantom > unit(800)
    assert bone.mean() > 0.002 and phantom.max() > 0.5, "bone ≈ 0.5-0.6"


def test_anatomy_follows_axis_convention(phantom: np.ndarray) -> None:
    z, h, w = phantom.shape
    rows, cols = np.indices((h, w))
    bone = phantom > unit(800)
    # Spine: posterior (rows increase anterior → posterior), on the midline.
    spine = bone[:, :, w // 2 - 8 : w // 2 + 8]
    spine_rows = np.nonzero(spine)[1]
    assert spine_rows.mean() > 0.6 * h
    # Heart blood pool (contrast, ~140 HU) on the patient's left = image columns > W/2.
    pool = (phantom > unit(110)) & (phantom < unit(170))
    assert cols[pool.any(axis=0)].mean() > w / 2 + 5
    # Liver (~60 HU) under the right lung = image columns < W/2, in the inferior slices.
    liver = (phantom[: z // 3] > unit(55)) & (phantom[: z // 3] < unit(75))
    assert cols[liver.any(axis=0)].mean() < w / 2 - 5
    # Lungs grow towards the superior end (z increases inferior → superior).
    lung = phantom < unit(-700)
    inside = ~(phantom == 0)
    assert (lung & inside)[-3:].mean() > (lung & inside)[:3].mean()


def test_same_anatomy_at_every_size() -> None:
    big = ct_phantom((6, 256, 256), seed=4)
    small = ct_phantom((6, 128, 128), seed=4)
    down = block_reduce(big, (1, 2, 2), np.mean)
    assert np.abs(down - small).mean() < 0.01


def test_bad_shape() -> None:
    with pytest.raises(DataError, match="three positive sizes"):
        ct_phantom((0, 32, 32))
    with pytest.raises(DataError, match="three positive sizes"):
        ct_phantom((32, 32))
