"""Reading volumes: the real DICOM series and HDF5 files, NIfTI/NumPy, and clear errors."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest

from ctblend.io import DataError, DataWarning, read_volume, write_dicom_series, write_hdf5

# From ../shared/data/ct/MANIFEST.md (the volume table): shape (z, y, x) and spacing [dz, dy, dx].
MANIFEST_VOLUMES = {
    "tcga_ov_abdomen": ((160, 256, 256), (3.0, 2.06, 2.06)),
    "tcga_thca_neck": ((159, 256, 256), (1.5, 1.03125, 1.03125)),
    "popi00": ((141, 256, 256), (2.0, 1.953125, 1.953125)),
    "cptac_pda_chest": ((102, 256, 256), (3.0, 1.765625, 1.765625)),
    "cptac_lscc_head": ((85, 256, 256), (3.0, 1.054, 1.054)),
}


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    """The error is a DataError (a ValueError) on one line containing every fragment."""
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.fixture
def expected(dicom_dir: Path) -> dict:
    return json.loads((dicom_dir / "EXPECTED.json").read_text())


@pytest.fixture
def series_copy(dicom_dir: Path, tmp_path: Path) -> Path:
    """The 16 real DICOM files (only) in a temporary folder."""
    folder = tmp_path / "series"
    folder.mkdir()
    for path in dicom_dir.glob("*.dcm"):
        shutil.copy(path, folder / path.name)
    return folder


# --- DICOM --------------------------------------------------------------------------------------


def test_dicom_series_matches_expected(dicom_dir: Path, expected: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # EXPECTED.json / LICENSE.txt are ignored
        vol = read_volume(dicom_dir)
    assert vol.hu.shape == tuple(expected["shape"])
    assert vol.spacing_mm == pytest.approx(expected["spacing_mm"], abs=1e-9)
    assert vol.meta["files"] == expected["z_sorted_files"]
    assert vol.meta["slice_positions_mm"] == pytest.approx(expected["z_positions_mm"], abs=1e-6)
    assert vol.meta["instance_numbers"] == expected["instance_numbers"]
    hu = vol.hu.astype(np.float64)
    assert hu.min() == expected["hu_min"]
    assert hu.max() == expected["hu_max"]
    assert hu.mean() == pytest.approx(expected["hu_mean"], abs=1e-9)
    assert vol.meta["format"] == "dicom"


def test_dicom_slices_match_pydicom_and_converted_hdf5(
    dicom_dir: Path, ct_dir: Path, expected: dict
) -> None:
    vol = read_volume(dicom_dir)
    # Slice k is the k-th file of the true z order, HU by hand from pydicom.
    for k in (0, 7, 15):
        ds = pydicom.dcmread(dicom_dir / expected["z_sorted_files"][k])
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(vol.hu[k], hu)
    # MANIFEST: the same conversion of these 16 slices equals cptac_pda_chest.h5 slices 43-58.
    clipped = np.clip(vol.hu.astype(np.float64), -1024, 3071)
    down = clipped.reshape(16, 256, 2, 256, 2).mean(axis=(2, 4))
    converted = np.clip(np.rint(down), -1024, 3071).astype(np.int16)
    with h5py.File(ct_dir / "cptac_pda_chest.h5", "r") as f:
        np.testing.assert_array_equal(converted, f["hu"][43:59])


def test_dicom_order_never_from_file_names(
    series_copy: Path, expected: dict, tmp_path: Path
) -> None:
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for path in series_copy.iterdir():  # name files by InstanceNumber, which runs against z
        instance = int(pydicom.dcmread(path, stop_before_pixels=True).InstanceNumber)
        shutil.copy(path, renamed / f"IM{instance:04d}")
    vol = read_volume(renamed)
    assert vol.meta["slice_positions_mm"] == pytest.approx(expected["z_positions_mm"], abs=1e-6)
    np.testing.assert_array_equal(vol.hu, read_volume(series_copy).hu)


def test_dicom_missing_middle_slice(series_copy: Path, expected: dict) -> None:
    order = expected["z_sorted_files"]
    (series_copy / order[8]).unlink()
    with pytest.raises(DataError) as excinfo:
        read_volume(series_copy)
    assert_one_line_error(excinfo, str(series_copy), order[7], order[9], "6 mm", "expected 3 mm")


def test_dicom_two_series_in_one_folder(series_copy: Path, expected: dict) -> None:
    other_series = pydicom.uid.generate_uid()
    for name in expected["z_sorted_files"][:4]:
        ds = pydicom.dcmread(series_copy / name)
        ds.SeriesInstanceUID = other_series
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(series_copy / f"other_{name}")
    with pytest.raises(DataError) as excinfo:
        read_volume(series_copy)
    assert_one_line_error(
        excinfo, str(series_copy), "2 series", "16 files", "4 files", "exactly one"
    )


def test_dicom_non_dicom_file_is_skipped_with_warning(series_copy: Path, expected: dict) -> None:
    (series_copy / "0017.dcm").write_text("this is not a DICOM file\n")
    (series_copy / "notes.txt").write_text("documentation files are ignored silently\n")
    with pytest.warns(DataWarning, match="0017.dcm") as record:
        vol = read_volume(series_copy)
    assert len(record) == 1 and "notes.txt" not in str(record[0].message)
    assert vol.hu.shape == tuple(expected["shape"])
    assert vol.meta["skipped_files"] == ["0017.dcm"]


@pytest.mark.parametrize(
    ("keyword", "value", "fragment"),
    [
        ("ImageOrientationPatient", [0, 1, 0, 0, 0, -1], "ImageOrientationPatient"),
        ("PixelSpacing", [0.5, 0.5], "PixelSpacing"),
        ("Rows", 256, "(256, 512)"),
    ],
)
def test_dicom_inconsistent_slice(
    series_copy: Path, expected: dict, keyword: str, value: object, fragment: str
) -> None:
    name = expected["z_sorted_files"][5]
    ds = pydicom.dcmread(series_copy / name)
    setattr(ds, keyword, value)
    ds.save_as(series_copy / name)
    with pytest.raises(DataError) as excinfo:
        read_volume(series_copy)
    assert_one_line_error(excinfo, name, fragment, "expected")


def test_single_dicom_file_is_not_a_volume(dicom_dir: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        read_volume(dicom_dir / "0001.dcm")
    assert_one_line_error(excinfo, "0001.dcm", "folder")


# --- HDF5 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MANIFEST_VOLUMES))
def test_every_shared_hdf5_reads(ct_dir: Path, name: str) -> None:
    shape, spacing = MANIFEST_VOLUMES[name]
    vol = read_volume(ct_dir / f"{name}.h5")
    assert vol.hu.shape == shape and vol.hu.dtype == np.int16
    assert vol.spacing_mm == pytest.approx(spacing, abs=1e-9)
    assert vol.hu.min() >= -1024 and vol.hu.max() <= 3071
    assert vol.meta["region"] in ("abdomen", "neck", "thorax", "chest", "head")
    with h5py.File(ct_dir / f"{name}.h5", "r") as f:
        np.testing.assert_array_equal(vol.hu[::40], f["hu"][::40])


def test_truncated_hdf5(ct_dir: Path, tmp_path: Path) -> None:
    data = (ct_dir / "popi00.h5").read_bytes()
    path = tmp_path / "truncated.h5"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as excinfo:
        read_volume(path)
    assert_one_line_error(excinfo, str(path), "truncated", "expected a complete HDF5 file")


def test_truncated_written_hdf5(tmp_path: Path) -> None:
    path = write_hdf5(tmp_path / "v.h5", np.zeros((4, 64, 64), np.int16), spacing_mm=(1, 1, 1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError) as excinfo:
        read_volume(path)
    assert_one_line_error(excinfo, str(path), "truncated", "expected a complete HDF5 file")


def _hdf5_with(path: Path, dataset: str, shape: tuple[int, ...]) -> Path:
    """An HDF5 file holding one int16 dataset of zeros and a spacing."""
    with h5py.File(path, "w") as f:
        f[dataset] = np.zeros(shape, np.int16)
        f.attrs["spacing_mm"] = [1.0, 1.0, 1.0]
    return path


def test_missing_hu_dataset(tmp_path: Path) -> None:
    path = _hdf5_with(tmp_path / "nohu.h5", "volume", (4, 8, 8))
    with pytest.raises(DataError) as excinfo:
        read_volume(path)
    assert_one_line_error(excinfo, str(path), "no dataset 'hu'", "volume")


def test_2d_array_where_a_volume_is_expected(tmp_path: Path) -> None:
    h5 = _hdf5_with(tmp_path / "flat.h5", "hu", (256, 256))
    with pytest.raises(DataError) as excinfo:
        read_volume(h5)
    assert_one_line_error(excinfo, str(h5), "(256, 256)", "2-D", "3-D volume (Z, H, W)")
    npy = tmp_path / "flat.npy"
    np.save(npy, np.zeros((32, 32), np.float32))
    with pytest.raises(DataError) as excinfo:
        read_volume(npy, spacing_mm=(1, 1, 1))
    assert_one_line_error(excinfo, str(npy), "(32, 32)", "3-D")


def test_hdf5_spacing_must_agree_with_caller(ct_dir: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        read_volume(ct_dir / "popi00.h5", spacing_mm=(1.0, 1.0, 1.0))
    assert_one_line_error(excinfo, "popi00.h5", "(1.0, 1.0, 1.0)", "(2.0, 1.953125, 1.953125)")


# --- NumPy / NIfTI / dispatch -------------------------------------------------------------------


def test_numpy_volumes(tmp_path: Path) -> None:
    hu = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) - 1000
    np.save(tmp_path / "v.npy", hu)
    vol = read_volume(tmp_path / "v.npy", spacing_mm=(2.5, 0.7, 0.7))
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.spacing_mm == (2.5, 0.7, 0.7) and vol.hu.dtype == np.int16
    with pytest.raises(DataError) as excinfo:
        read_volume(tmp_path / "v.npy")
    assert_one_line_error(excinfo, "v.npy", "spacing_mm")
    np.savez(tmp_path / "v.npz", hu=hu.astype(np.float64), spacing_mm=[3.0, 1.0, 1.0])
    vol = read_volume(tmp_path / "v.npz")
    assert vol.hu.dtype == np.float32 and vol.spacing_mm == (3.0, 1.0, 1.0)
    np.testing.assert_array_equal(vol.hu, hu.astype(np.float32))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError) as excinfo:
        read_volume(tmp_path / "obj.npy", spacing_mm=(1, 1, 1))
    assert_one_line_error(excinfo, "obj.npy")


def test_nifti_affine_to_axis_convention(tmp_path: Path) -> None:
    nibabel = pytest.importorskip("nibabel", reason="NIfTI support is the optional nifti extra")
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 2000, size=(5, 6, 7)).astype(np.int16)  # (z, y, x) LPS-ascending
    dz, dy, dx = 2.5, 0.8, 0.9
    # A RAS+ image, voxel axes (i, j, k): i runs to patient right (-x), j anterior (-y), k superior.
    ras = np.ascontiguousarray(hu.transpose(2, 1, 0)[::-1, ::-1, :])
    nibabel.save(nibabel.Nifti1Image(ras, np.diag([dx, dy, dz, 1.0])), tmp_path / "ras.nii.gz")
    vol = read_volume(tmp_path / "ras.nii.gz")
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.spacing_mm == pytest.approx((dz, dy, dx))
    assert vol.meta["source_axis_codes"] == "RAS"
    # An LPS-stored image (as from DICOM): negative x/y in RAS, axes (x, y, z).
    lps = np.ascontiguousarray(hu.transpose(2, 1, 0))
    nibabel.save(nibabel.Nifti1Image(lps, np.diag([-dx, -dy, dz, 1.0])), tmp_path / "lps.nii")
    vol = read_volume(tmp_path / "lps.nii")
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.meta["source_axis_codes"] == "LPS"


def test_unknown_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "v.xyz").write_text("?")
    with pytest.raises(DataError) as excinfo:
        read_volume(tmp_path / "v.xyz")
    assert_one_line_error(excinfo, "v.xyz", ".xyz", "expected a DICOM folder")
    with pytest.raises(DataError) as excinfo:
        read_volume(tmp_path / "absent.h5")
    assert_one_line_error(excinfo, "absent.h5", "not found")


def test_text_renamed_h5_is_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "notes.h5"
    path.write_text("a text file, renamed\n")
    with pytest.raises(DataError) as excinfo:
        read_volume(path)
    assert_one_line_error(excinfo, str(path), "not an HDF5 file", "expected a complete HDF5 file")
    assert "truncated" not in str(excinfo.value)


def test_truncated_dicom_file_says_truncated(tmp_path: Path) -> None:
    hu = np.arange(4 * 16 * 16, dtype=np.float32).reshape(4, 16, 16)
    folder = write_dicom_series(tmp_path / "series", hu, (2.0, 1.0, 1.0))
    victim = sorted(folder.iterdir())[1]
    data = victim.read_bytes()
    victim.write_bytes(data[:-100])  # the end of the pixel data is gone
    with pytest.raises(DataError) as excinfo:
        read_volume(folder)
    assert_one_line_error(excinfo, str(victim), "truncated", f"{16 * 16 * 2 - 100} of the 512")
    assert "pylibjpeg" not in str(excinfo.value)
