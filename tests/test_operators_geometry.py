"""Geometry values: presets as in the protocol, ASTRA conversions, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import operators as ops


@pytest.fixture
def astra():
    """The ASTRA module; skips only the test that asks for it when ASTRA is absent."""
    return pytest.importorskip("astra")


def test_svct_preset_matches_protocol():
    vg, pg = ops.svct(8, 128)
    assert vg.shape == (128, 128) and vg.spacing == (1.0, 1.0)
    assert pg.det_count == 256 and pg.det_spacing == 1.0
    np.testing.assert_allclose(pg.angles, np.linspace(0, np.pi, 8, endpoint=False))


def test_lact_preset_is_0_to_89_degrees():
    _, pg = ops.lact(90, 90, 128)
    np.testing.assert_allclose(np.degrees(pg.angles), np.arange(90), atol=1e-12)


def test_integer_angles_cover_half_turn_for_parallel_and_full_turn_for_fan():
    assert ops.parallel(4, 10).angles == pytest.approx(
        (0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)
    )
    assert ops.fan_flat(4, 10, 1.0, 50, 50).angles[1] == pytest.approx(math.pi / 2)


@pytest.mark.parametrize(
    "pg",
    [
        ops.parallel(np.linspace(0.1, 3.0, 7), 33, 0.7),
        ops.fan_flat(np.linspace(0.2, 6.0, 9), 41, 1.3, 120.0, 80.0),
    ],
)
def test_vector_form_matches_astra_geom_2vec(pg, astra):
    ours = np.asarray(pg.to_vec().vectors)
    theirs = astra.geom_2vec(pg.to_astra())["Vectors"]
    np.testing.assert_allclose(ours, theirs, atol=1e-10)


@pytest.mark.parametrize(
    "pg",
    [
        ops.parallel(5, 20, 0.8),
        ops.fan_flat(6, 20, 1.5, 100.0, 50.0),
        ops.parallel3d(5, (10, 12), (1.2, 0.9)),
        ops.cone(7, (10, 12), (1.1, 1.3), 90.0, 30.0),
    ],
)
def test_astra_dict_round_trip(pg):
    back = ops.from_astra(pg.to_astra())
    assert back == pg
    vec_back = ops.from_astra(pg.to_vec().to_astra())
    np.testing.assert_allclose(vec_back.vectors, pg.to_vec().vectors)


def test_3d_vectors_follow_astra_conversion_formulas():
    # ASTRA's documented cone → cone_vec conversion (one angle).
    pg = ops.cone([0.4], (10, 12), (1.1, 1.3), 90.0, 30.0)
    s, c = math.sin(0.4), math.cos(0.4)
    expected = [s * 90, -c * 90, 0, -s * 30, c * 30, 0, c * 1.3, s * 1.3, 0, 0, 0, 1.1]
    np.testing.assert_allclose(pg.to_vec().vectors[0], expected, atol=1e-12)


def test_volume_astra_dict_round_trip(astra):
    vg = ops.volume((6, 8), spacing=(0.5, 2.0), center=(1.0, -3.0))
    assert ops.VolumeGeometry.from_astra(vg.to_astra()) == vg
    a = astra.create_vol_geom(6, 8, -11.0, 5.0, -0.5, 2.5)
    assert ops.VolumeGeometry.from_astra(a).to_astra()["option"] == pytest.approx(a["option"])


def test_geometries_are_immutable_and_hashable():
    pg = ops.parallel(3, 5)
    with pytest.raises(AttributeError):
        pg.det_count = 7
    assert hash(pg) == hash(ops.parallel(3, 5))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ops.parallel([], 10), "empty"),
        (lambda: ops.parallel(4, 0), "det_count"),
        (lambda: ops.parallel([0.0, float("nan")], 10), "finite"),
        (lambda: ops.volume((0, 4)), "volume shape"),
        (lambda: ops.volume((4, 4), spacing=-1.0), "spacing"),
        (lambda: ops.fan_flat(4, 10, 1.0, -5.0, 10.0), "src_orig"),
        (lambda: ops.parallel_vec(np.zeros((3, 5)), 10), "parallel_vec"),
    ],
)
def test_bad_geometry_raises_one_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()
