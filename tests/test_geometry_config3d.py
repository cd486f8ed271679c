"""3D geometry files (cone, parallel3d, cone_vec): forms, errors, conventions, measurement files."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import operators as ops
from ctblend.geometry3d import Geometry3DConfig
from ctblend.geometry_config import (
    Acquisition,
    geometry_from_yaml,
    read_arrays,
    read_measurements,
    write_measurements,
)
from ctblend.io import DataError, DataWarning

pytestmark = pytest.mark.usefixtures("one_thread")

CONE = (
    "type: cone\nangles: {count: 4, start_deg: 0, stop_deg: 220}\nsrc_orig: 40\norig_det: 20\n"
    "det_shape: [10, 14]\ndet_spacing: 1.5\nvoxel_size: [2, 1, 1]\nnoise: true\n"
)


def _yaml(tmp_path, text: str):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    return path


def test_cone_yaml_gives_the_circular_cone_geometry(tmp_path):
    geometry, noise = geometry_from_yaml(_yaml(tmp_path, CONE))
    assert noise and isinstance(geometry, Geometry3DConfig)
    assert geometry.angles_deg == (0.0, 55.0, 110.0, 165.0)
    pg = geometry.projection()
    assert isinstance(pg, ops.ConeGeometry)
    assert pg.angles == pytest.approx(np.radians([0, 55, 110, 165]))
    assert (pg.src_orig, pg.orig_det, pg.det_shape, pg.det_spacing) == (
        40,
        20,
        (10, 14),
        (1.5, 1.5),
    )
    assert geometry.volume((3, 5, 6)).spacing == (2.0, 1.0, 1.0)
    assert Geometry3DConfig.from_dict(geometry.to_dict()) == geometry  # explicit form round trip
    full = Geometry3DConfig.from_dict(
        {"type": "cone", "angles": 4, "src_orig": 9, "orig_det": 1, "det_shape": [2, 3]}
    )
    assert full.angles_deg == (0, 90, 180, 270)  # a count spreads over a full turn
    par = Geometry3DConfig.from_dict({"type": "parallel3d", "angles": 4, "det_shape": [2, 3]})
    assert par.angles_deg == (0, 45, 90, 135)  # … and over half a turn in parallel
    assert isinstance(par.projection(), ops.Parallel3DGeometry)


def test_anisotropic_voxels_set_path_lengths_and_detector_footprint():
    """A box of ones (Z, H, W) = (4, 6, 6) with voxels (2, 1, 1), seen along a volume axis by
    unit detector pixels: every central ray crosses 6 units, the box covers 6 columns, and each
    column integrates its 8 × 6 units² of area (edges blur under the interpolation kernel)."""
    geometry = Geometry3DConfig.from_dict(
        {"type": "parallel3d", "angles": [0], "det_shape": [12, 10], "voxel_size": [2, 1, 1]}
    )
    A = Acquisition(geometry=geometry).operator((4, 6, 6))
    y = A(torch.ones(4, 6, 6, dtype=torch.float64))[:, 0, :]  # (rows, cols)
    assert y[4:8, 2:8] == pytest.approx(torch.full((4, 6), 6.0, dtype=torch.float64), rel=1e-9)
    assert y.sum(0)[2:8] == pytest.approx(torch.full((6,), 48.0, dtype=torch.float64), rel=1e-9)
    assert y[:, :2].abs().max() < 1e-9 and y[:, 8:].abs().max() < 1e-9


@pytest.mark.parametrize("kind", ["cone", "parallel3d"])
def test_detector_offset_shifts_the_columns_and_rows_a_view_sees(kind):
    """Offsetting the detector by (1, 2) pixels: its pixel (r, c) lies where the centred
    detector's pixel (r + 1, c + 2) lies, so it records the same line integral. (The detector
    misses part of the volume's projection: an interior problem, allowed explicitly.)"""
    base = {
        "type": kind,
        "angles": [0, 30, 75],
        "det_shape": [12, 16],
        "det_spacing": [1.0, 0.5],
        "allow_truncation": True,
    }
    if kind == "cone":
        base.update(src_orig=30, orig_det=15)
    centred = Geometry3DConfig.from_dict(base)
    offset = Geometry3DConfig.from_dict({**base, "det_offset": [1.0, 1.0]})
    x = torch.rand(5, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with warnings.catch_warnings():  # the offset detector misses part of the volume
        warnings.simplefilter("ignore", DataWarning)
        y0 = Acquisition(geometry=centred).operator(x.shape)(x)  # (rows, V, cols)
        y1 = Acquisition(geometry=offset).operator(x.shape)(x)
    assert y1[:-1, :, :-2] == pytest.approx(y0[1:, :, 2:], abs=1e-9)
    assert y0.abs().max() > 1


def test_cone_vec_from_a_text_file_an_npy_file_and_inline(tmp_path):
    vectors = np.array(ops.cone([0.1, 1.3], (4, 6), 1.0, 20, 10).to_vec().vectors)
    np.savetxt(tmp_path / "v.txt", vectors)
    np.save(tmp_path / "v.npy", vectors)
    for value in ("v.txt", "v.npy"):
        path = _yaml(tmp_path, f"type: cone_vec\nvectors: {value}\ndet_shape: [4, 6]\n")
        geometry, noise = geometry_from_yaml(path)
        assert not noise and geometry.n_views == 2
        assert np.array(geometry.projection().vectors) == pytest.approx(vectors)
    inline = Geometry3DConfig.from_dict(
        {"type": "cone_vec", "vectors": vectors.tolist(), "det_shape": [4, 6]}
    )
    assert inline == geometry and Geometry3DConfig.from_dict(inline.to_dict()) == inline


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type: cone\nangles: 4\nsrc_orig: 9\norig_det: 1\n", "'det_shape' is missing"),
        ("type: cone\nangles: 4\nsrc_orig: 9\ndet_shape: [2, 3]\n", "'orig_det' is missing"),
        ("type: cone\nangles: 4\nsrc_orig: -9\norig_det: 1\ndet_shape: [2, 3]\n", "src_orig is -9"),
        ("type: cone\nangles: 4\nsrc_orig: 9\norig_det: 1\ndet_shape: [2]\n", "det_shape is"),
        ("type: cone\nangles: 4\nsrc_orig: 9\norig_det: 1\ndet_shape: [2, 0]\n", "det_shape is 0"),
        ("type: parallel3d\nangles: 4\nsrc_orig: 9\ndet_shape: [2, 3]\n", "not used by a para"),
        ("type: parallel3d\nangles: 4\ndet_shape: [2, 3]\ndet_count: 3\n", "'det_count'] not"),
        ("type: parallel3d\nangles: 4\ndet_shape: [2, 3]\nvoxel_size: [1, 2]\n", "voxel_size"),
        ("type: parallel3d\nangles: 0\ndet_shape: [2, 3]\n", "angles is 0"),
        ("type: cone_vec\nvectors: missing.txt\ndet_shape: [2, 3]\n", "vectors file"),
        ("type: cone_vec\nvectors: [[1, 2, 3]]\ndet_shape: [2, 3]\n", r"shape \(1, 3\)"),
        ("type: cone_vec\nvectors: [[1, 2, 3]]\nangles: 4\ndet_shape: [2, 3]\n", "['angles']"),
    ],
)
def test_each_bad_field_gives_one_line_naming_the_file(tmp_path, text, expected):
    path = _yaml(tmp_path, text)
    with pytest.raises(DataError, match=expected if expected[0] != "[" else None) as info:
        geometry_from_yaml(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    if expected[0] == "[":
        assert expected in message


def test_measurement_files_store_one_projection_per_view(tmp_path):
    """simulate → file → read: the file holds (V, rows, cols); reading gives the operator's
    layout back, and a file of the wrong shape fails with one line."""
    geometry, noise = geometry_from_yaml(_yaml(tmp_path, CONE))
    acquisition = Acquisition(geometry=geometry, noise=noise)
    assert acquisition.is_3d and acquisition.name == "cone4+noise"
    shape = (3, 8, 8)
    A = acquisition.operator(shape)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    y = acquisition.simulate(A, x, pixel_mm=1.0, seed=3)
    assert tuple(y.shape) == A.range_shape == (10, 4, 14)
    path = write_measurements(
        tmp_path / "m.h5", y, acquisition, volume_shape=shape, spacing_mm=(2, 1, 1), truth=x
    )
    arrays, attrs = read_arrays(path)
    assert arrays["projections"].shape == (4, 10, 14)
    assert np.array_equal(arrays["projections"][2], y[:, 2].numpy())  # view 2 as one image
    m = read_measurements(path)
    assert m.acquisition == acquisition and np.array_equal(m.sinogram, y.numpy())
    bad = write_measurements(
        tmp_path / "bad.h5", y[:, :3], acquisition, volume_shape=shape, spacing_mm=(2, 1, 1)
    )
    with pytest.raises(DataError, match=r"projections has shape \(3, 10, 14\); expected \(4, 10"):
        read_measurements(bad)


def test_noise_uses_the_in_plane_voxel_size_for_path_lengths():
    """The same object in voxel units 1 and 2 (lengths doubled): Poisson noise sees the same
    physical path lengths, so its relative size matches for the same pixel_mm per unit."""
    x = torch.full((4, 8, 8), 0.3)
    stds = []
    for size in (1.0, 2.0):
        geometry = Geometry3DConfig.from_dict(
            {
                "type": "parallel3d",
                "angles": 16,
                "det_shape": [8, 12],
                "voxel_size": size,
                "det_spacing": size,
            }
        )
        acquisition = Acquisition(geometry=geometry, noise=True)
        A = acquisition.operator(x.shape)
        clean = A(x)
        noisy = acquisition.simulate(A, x, pixel_mm=2.0, seed=0)
        mask = clean > clean.max() / 2
        stds.append(float(((noisy - clean)[mask] / clean[mask]).std()))
    assert math.isclose(stds[0], stds[1], rel_tol=1e-3)
