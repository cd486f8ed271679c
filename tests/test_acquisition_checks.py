"""Acquisition sanity checks against hand-computed geometry (issue 26).

A 128² grid of unit voxels has its voxel centres within ±63.5 of the axis; the 10-slice stack
within ±4.5. Sources sit at ``(sin β, −cos β) · src_orig`` (the operators' convention), so at
β = 0 the corner nearest the source is (±63.5, −63.5), at distance 256 − 63.5 = 192.5 along the
central ray; with the detector 256 beyond the axis the magnification there is 512 / 192.5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

import operators as ops
from ctblend.acquisition_checks import check_acquisition, detector_reach, source_positions
from ctblend.geometry3d import Geometry3DConfig
from ctblend.geometry_config import Acquisition, GeometryConfig, geometry_from_yaml
from ctblend.io import DataError, DataWarning

SLICE = ops.volume((128, 128))
STACK = ops.volume((10, 128, 128))
MAGNIFIED = 512 / 192.5  # corner nearest the source, β = 0, src_orig = orig_det = 256


def test_parallel_beam_needs_the_diagonal_of_the_voxel_centres():
    need = 2 * 63.5 * math.sqrt(2)  # 179.6 bins at 45°
    assert 2 * detector_reach(SLICE, ops.parallel([math.pi / 4], 180))[0, 0] == pytest.approx(need)
    assert 2 * detector_reach(SLICE, ops.parallel([0.0], 180))[0, 0] == pytest.approx(127)
    check_acquisition(SLICE, ops.parallel([math.pi / 4], 180))
    with pytest.raises(DataError, match=r"detector \(179 bins\) does not cover .* spans 180"):
        check_acquisition(SLICE, ops.parallel([math.pi / 4], 179))
    check_acquisition(SLICE, ops.parallel(8, 256))  # the protocols' 2n bins


def test_fan_beam_flat_and_arc_detectors():
    flat = 2 * 63.5 * MAGNIFIED / 2.0  # 168.9 bins of 2
    pg = ops.fan_flat([0.0], 169, 2.0, 256, 256)
    assert 2 * detector_reach(SLICE, pg)[0, 0] == pytest.approx(flat)
    check_acquisition(SLICE, pg)
    with pytest.raises(DataError, match=r"\(168 bins\) does not cover"):
        check_acquisition(SLICE, ops.fan_flat([0.0], 168, 2.0, 256, 256))
    arc = 2 * math.atan(63.5 / 192.5) * 512  # arc length of the fan angle at radius 512
    pg = ops.fan_arc([0.0], 400, 1.0, 256, 256)
    assert 2 * detector_reach(SLICE, pg)[0, 0] == pytest.approx(arc)
    with pytest.raises(DataError, match=r"\(326 bins\)"):
        check_acquisition(SLICE, ops.fan_arc([0.0], 326, 1.0, 256, 256))
    check_acquisition(SLICE, ops.fan_arc([0.0], 327, 1.0, 256, 256))


def test_cone_beam_rows_and_columns():
    rows, cols = 2 * 4.5 * MAGNIFIED, 2 * 63.5 * MAGNIFIED  # 23.9 and 337.8 pixels of 1
    pg = ops.cone([0.0], (24, 338), 1.0, 256, 256)
    assert detector_reach(STACK, pg)[0] * 2 == pytest.approx([cols, rows])
    check_acquisition(STACK, pg)
    for shape in ((23, 338), (24, 337)):
        with pytest.raises(DataError, match=f"{shape[0]} × {shape[1]} pixels"):
            check_acquisition(STACK, ops.cone([0.0], shape, 1.0, 256, 256))


def test_an_offset_detector_needs_the_offset_twice_over():
    """A 3D parallel detector shifted by 10 columns: the volume (±63.5 at β = 0) reaches column
    63.5 + 10 on one side, so 2 · 73.5 = 147 columns are needed."""
    base = {"type": "parallel3d", "angles": [0], "det_shape": [10, 147], "det_offset": [0, 10]}
    Acquisition(geometry=Geometry3DConfig.from_dict(base)).operator((10, 128, 128))
    narrow = {**base, "det_shape": [10, 146]}
    with pytest.raises(DataError, match="10 × 146 pixels"):
        Acquisition(geometry=Geometry3DConfig.from_dict(narrow)).operator((10, 128, 128))


def test_a_source_inside_or_on_the_volume_box():
    assert source_positions(ops.cone([0.0], (4, 4), 1.0, 50, 10))[0] == pytest.approx([0, -50, 0])
    assert source_positions(ops.parallel(4, 10)) is None
    for src_orig in (50, 64):  # inside; on the box surface (y = −64)
        with pytest.raises(DataError, match=f"source at view 0 .*-{src_orig}.* inside or on"):
            check_acquisition(STACK, ops.cone([0.0], (999, 999), 1.0, src_orig, 256))
        with pytest.raises(DataError, match="inside or on the 128 × 128 volume box"):
            check_acquisition(SLICE, ops.fan_arc([0.0], 999, 1.0, src_orig, 256))
    check_acquisition(STACK, ops.cone([0.0], (999, 9999), 1.0, 70, 256))  # 6.5 off the box


def test_truncation_allowed_is_a_warning_and_the_operator_is_built(tmp_path):
    path = tmp_path / "interior.yaml"
    path.write_text(
        "type: fan_flat\nangles: 8\ndet_count: 64\nsrc_orig: 256\norig_det: 256\n"
        "allow_truncation: true\n"
    )
    geometry, _ = geometry_from_yaml(path)
    assert geometry.to_dict()["allow_truncation"] is True
    assert GeometryConfig.from_dict(geometry.to_dict()) == geometry  # the file round trip
    acquisition = Acquisition(geometry=geometry, source=str(path))
    with pytest.warns(DataWarning, match=r"interior.yaml on a 2 × 128 × 128 .*as asked"):
        A = acquisition.operator((2, 128, 128))
    assert tuple(A(torch.zeros(2, 128, 128)).shape) == (2, 8, 64)
    with pytest.raises(DataError, match="allow_truncation is 'yes'; expected true or false"):
        GeometryConfig.from_dict({**geometry.to_dict(), "allow_truncation": "yes"})


@pytest.mark.parametrize("name", ["cone8", "cone16", "cone_short", "fan8_flat"])
def test_the_shipped_geometries_cover_the_test_volume(name):
    """docs/geometries/*.yaml say they cover a 102 × 128 × 128 volume from every angle."""
    geometry, _ = geometry_from_yaml(REPO_ROOT / "docs" / "geometries" / f"{name}.yaml")
    Acquisition(geometry=geometry).operator((102, 128, 128))


def test_non_finite_measurements_are_refused(tmp_path):
    from ctblend.geometry_config import read_measurements, write_measurements

    acquisition = Acquisition(protocol="svct8")
    y = np.zeros((2, 8, 64), np.float32)
    y[1, 3, 5] = np.nan
    write_measurements(
        tmp_path / "m.h5", y, acquisition, volume_shape=(2, 32, 32), spacing_mm=(1, 1, 1)
    )
    with pytest.raises(DataError, match=r"'sinogram': 1 of 1024 values .* index \(1, 3, 5\)"):
        read_measurements(tmp_path / "m.h5")
