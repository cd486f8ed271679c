"""Writing: atomic HDF5 round trips (data and metadata), DICOM export, volume conversion."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest
import torch

from ctblend.io import (
    DataError,
    read_hdf5,
    read_volume,
    write_dicom_series,
    write_hdf5,
    write_volume,
)

ATTRS = {
    "method": "diffusionblend++",
    "protocol": "svct8",
    "seed": 1234,
    "eta": 0.85,
    "clipped": True,
    "geometry": {"kind": "parallel", "angles": [0.0, 0.39269908169872414], "det_count": 256},
    "metrics": {"psnr_axial": [31.5, 0.7], "ssim": 0.912, "note": None},
    "views": [0, 1, 2],
    "hu_clip": np.array([-1024, 3071], dtype=np.int32),
    "angles_rad": np.linspace(0, np.pi, 8, endpoint=False),
}


def _assert_attrs_equal(meta: dict, attrs: dict) -> None:
    for key, value in attrs.items():
        if isinstance(value, np.ndarray):
            assert meta[key].dtype == value.dtype
            np.testing.assert_array_equal(meta[key], value)
        else:
            assert meta[key] == value and type(meta[key]) is type(value), key


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_hdf5_round_trip_is_bit_exact(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((7, 16, 12)) * 500).astype(dtype)
    path = write_hdf5(tmp_path / "rec.h5", array, spacing_mm=(2.5, 0.75, 0.8), attrs=ATTRS)
    vol = read_hdf5(path)
    assert vol.hu.dtype == dtype
    assert vol.hu.tobytes() == array.tobytes()
    assert vol.spacing_mm == (2.5, 0.75, 0.8)
    _assert_attrs_equal(vol.meta, ATTRS)
    assert {"numpy", "h5py", "python"} <= set(vol.meta["versions"])
    assert vol.meta["format"] == "hdf5" and vol.meta["path"] == str(path)


def test_hdf5_layout_matches_shared_files(tmp_path: Path) -> None:
    array = np.zeros((3, 32, 32), np.int16)
    write_hdf5(tmp_path / "v.h5", array, spacing_mm=(1.0, 2.0, 3.0), attrs={"region": "chest"})
    with h5py.File(tmp_path / "v.h5", "r") as f:
        dset = f["hu"]
        assert dset.chunks == (1, 32, 32) and dset.compression == "gzip" and dset.shuffle
        assert f.attrs["spacing_mm"].dtype == np.float64
        np.testing.assert_array_equal(f.attrs["spacing_mm"], [1.0, 2.0, 3.0])
        assert f.attrs["region"] == "chest"


def test_sinogram_and_torch_input(tmp_path: Path) -> None:
    sino = torch.rand(4, 8, 20, generator=torch.Generator().manual_seed(0))
    write_hdf5(tmp_path / "y.h5", sino, attrs={"protocol": "svct8"}, dataset="sinogram")
    with h5py.File(tmp_path / "y.h5", "r") as f:
        assert list(f) == ["sinogram"]
        np.testing.assert_array_equal(f["sinogram"][...], sino.numpy())
    vol = read_hdf5(tmp_path / "y.h5", spacing_mm=(1, 1, 1), dataset="sinogram")
    assert vol.hu.tobytes() == sino.numpy().tobytes()


def test_same_input_gives_identical_bytes(tmp_path: Path) -> None:
    array = np.arange(2 * 8 * 8, dtype=np.int16).reshape(2, 8, 8)
    write_hdf5(tmp_path / "a.h5", array, spacing_mm=(1, 1, 1), attrs=ATTRS)
    write_hdf5(tmp_path / "b.h5", array, spacing_mm=(1, 1, 1), attrs=ATTRS)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "rec.h5"
    old = np.ones((2, 8, 8), np.int16)
    write_hdf5(target, old, spacing_mm=(1, 1, 1), attrs={"run": 1})
    before = target.read_bytes()
    # The dataset is written first; the second attribute then fails (not JSON-serialisable).
    attrs = {"run": 2, "geometry": {"operator": object()}}
    with pytest.raises(DataError) as excinfo:
        write_hdf5(target, np.zeros((2, 8, 8), np.int16), attrs=attrs)
    assert "'geometry'" in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.h5"]


def test_failed_rename_leaves_no_temp(tmp_path: Path) -> None:
    (tmp_path / "out.h5").mkdir()  # the target path is taken by a folder
    with pytest.raises(OSError):
        write_hdf5(tmp_path / "out.h5", np.zeros((2, 4, 4), np.float32), attrs={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_reserved_attribute_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        write_hdf5(tmp_path / "v.h5", np.zeros((2, 4, 4)), attrs={"spacing_mm": [1, 1, 1]})
    assert "spacing_mm" in str(excinfo.value)
    assert not (tmp_path / "v.h5").exists()


def test_dicom_series_to_hdf5(dicom_dir: Path, tmp_path: Path) -> None:
    dicom = read_volume(dicom_dir)
    path = write_volume(tmp_path / "chest16.h5", dicom, note="converted")
    back = read_volume(path)
    assert back.hu.dtype == np.int16
    np.testing.assert_array_equal(back.hu, dicom.hu)
    assert back.spacing_mm == dicom.spacing_mm
    assert back.meta["series_instance_uid"] == dicom.meta["series_instance_uid"]
    assert back.meta["files"] == dicom.meta["files"]
    assert back.meta["converted_from_format"] == "dicom" and back.meta["note"] == "converted"


def test_dicom_export_reads_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    hu = rng.normal(0, 400, size=(6, 20, 24)).astype(np.float32)
    folder = write_dicom_series(
        tmp_path / "export", hu, (2.0, 0.5, 0.6), origin_lps_mm=(-5, -6, 10)
    )
    files = sorted(folder.iterdir())
    assert len(files) == 6
    for path in files:  # valid Part 10 files (preamble, file meta) of CT Image Storage
        ds = pydicom.dcmread(path)
        assert ds.file_meta.MediaStorageSOPClassUID == pydicom.uid.CTImageStorage
        assert ds.Modality == "CT" and ds.pixel_array.shape == (20, 24)
    vol = read_volume(folder)
    np.testing.assert_array_equal(vol.hu, np.rint(hu).astype(np.int16))
    assert vol.spacing_mm == pytest.approx((2.0, 0.5, 0.6))
    assert vol.meta["first_voxel_center_lps_mm"] == pytest.approx([-5, -6, 10])
    with pytest.raises(DataError) as excinfo:
        write_dicom_series(folder, hu, (2.0, 0.5, 0.6))
    assert "not an empty folder" in str(excinfo.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_outputs_get_the_umask_mode_not_a_private_one(tmp_path: Path) -> None:
    """Atomic writes go through a private temporary; the result has the mode ``open`` gives."""
    before = os.umask(0o022)
    try:
        h5 = write_hdf5(tmp_path / "v.h5", np.zeros((2, 4, 4), np.int16), spacing_mm=(1, 1, 1))
        dicom = write_dicom_series(tmp_path / "dcm", np.zeros((2, 4, 4)), (1.0, 1.0, 1.0))
        os.umask(0o077)
        private = write_hdf5(tmp_path / "p.h5", np.zeros((2, 4, 4)), spacing_mm=(1, 1, 1))
    finally:
        os.umask(before)
    assert stat.S_IMODE(h5.stat().st_mode) == 0o644
    assert stat.S_IMODE(dicom.stat().st_mode) == 0o755  # a folder
    assert stat.S_IMODE(private.stat().st_mode) == 0o600  # the user's umask decides
