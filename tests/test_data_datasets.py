"""Training datasets (lazy HDF5, seeded, worker-independent) and the manifest split."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from skimage.transform import iradon, radon
from torch.utils.data import DataLoader

from ctblend.data.datasets import FBPPairDataset, SliceDataset, SliceGroupDataset, WindowDataset
from ctblend.data.phantom import ct_phantom
from ctblend.data.splits import manifest_split
from ctblend.io import DataError, write_hdf5


def hand_scaled(path: Path, factor: int) -> np.ndarray:
    """Every slice of ``path`` in protocol units, block-mean downsampled, computed by hand."""
    with h5py.File(path, "r") as f:
        hu = f["hu"][...].astype(np.float64)
    x = (np.clip(hu, -1024, 3071) + 1024) / 4095
    z, h, w = x.shape
    return x.reshape(z, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def find_slice(image: np.ndarray, volumes: list[np.ndarray]) -> tuple[int, int]:
    """(volume, slice) whose slice equals ``image``; fails when none does."""
    for v, vol in enumerate(volumes):
        errors = np.abs(vol - image[None]).max(axis=(1, 2))
        k = int(np.argmin(errors))
        if errors[k] < 1e-5:
            return v, k
    raise AssertionError("returned image is not a slice of any volume")


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two small HDF5 volumes (20 and 12 slices, 64²) in HU, from the phantom."""
    folder = tmp_path_factory.mktemp("phantoms")
    files = []
    for seed, depth in ((0, 20), (1, 12)):
        hu = np.rint(ct_phantom((depth, 64, 64), seed=seed) * 4095 - 1024).astype(np.int16)
        files.append(
            write_hdf5(folder / f"ph{seed}.h5", hu, spacing_mm=(2.5, 6.25, 6.25), attrs={})
        )
    return files


def check_groups(dataset: SliceGroupDataset, volumes: list[np.ndarray], count: int) -> set[int]:
    labels = set()
    for index in range(count):
        x, gap = dataset[index]
        assert x.shape == (3, *volumes[0].shape[1:]) and x.dtype == torch.float32
        found = [find_slice(channel.numpy(), volumes) for channel in x]
        assert len({v for v, _ in found}) == 1, "three slices of one volume"
        k0, k1, k2 = (k for _, k in found)
        assert k1 - k0 == gap and k2 - k1 == gap, f"label {gap} for slices {k0, k1, k2}"
        labels.add(gap)
    return labels


def test_groups_are_real_slices_with_matching_label(phantom_files: list[Path]) -> None:
    volumes = [hand_scaled(p, 2) for p in phantom_files]
    dataset = SliceGroupDataset(phantom_files, scale=32, seed=5, length=40)
    assert check_groups(dataset, volumes, 40) == {1, 3}
    assert len(SliceGroupDataset(phantom_files, scale=32)) == 32, "default: one item per slice"


def test_gap_mix_and_positions(phantom_files: list[Path]) -> None:
    dataset = SliceGroupDataset(phantom_files, scale=32, gap_mix={1: 0.2, 3: 0.8}, length=2000)
    infos = [dataset.locate(i) for i in range(2000)]
    share3 = np.mean([info.label == 3 for info in infos])
    assert abs(share3 - 0.8) < 0.04
    depth = {phantom_files[0]: 20, phantom_files[1]: 12}
    starts = {(info.file, info.label): set() for info in infos}
    for info in infos:
        assert info.slices[2] <= depth[info.file] - 1
        starts[(info.file, info.label)].add(info.slices[0])
    # Every valid start of both files is drawn (uniform over all groups of a gap).
    assert starts[(phantom_files[0], 3)] == set(range(20 - 6))
    assert starts[(phantom_files[1], 1)] == set(range(12 - 2))
    only3 = SliceGroupDataset(phantom_files, scale=32, gap_mix={3: 1.0}, length=50)
    assert {only3.locate(i).label for i in range(50)} == {3}


def test_seeded_and_epochs(phantom_files: list[Path]) -> None:
    a = SliceGroupDataset(phantom_files, scale=32, seed=7, flips=True)
    b = SliceGroupDataset(phantom_files, scale=32, seed=7, flips=True)
    c = SliceGroupDataset(phantom_files, scale=32, seed=8, flips=True)
    for i in (0, 5, 31):
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]
    assert [a.locate(i) for i in range(32)] != [c.locate(i) for i in range(32)]
    first = [a.locate(i) for i in range(32)]
    a.set_epoch(1)
    assert [a.locate(i) for i in range(32)] != first
    assert {a.locate(i).flip for i in range(32)} == {True, False}


def test_worker_count_does_not_change_samples(phantom_files: list[Path]) -> None:
    dataset = SliceGroupDataset(phantom_files, scale=32, seed=3, flips=True, length=24)
    dataset[0]  # open files in the parent first: workers must not reuse these handles
    serial = list(DataLoader(dataset, batch_size=6, num_workers=0))
    parallel = list(DataLoader(dataset, batch_size=6, num_workers=2))
    for (x0, g0), (x1, g1) in zip(serial, parallel, strict=True):
        assert torch.equal(x0, x1) and torch.equal(g0, g1)


def test_slice_dataset_and_flips(phantom_files: list[Path]) -> None:
    volumes = [hand_scaled(p, 1) for p in phantom_files]
    plain = SliceDataset(phantom_files, scale=64)
    assert len(plain) == 32
    expected = np.concatenate(volumes)
    for index in (0, 19, 20, 31):
        x, label = plain[index]
        assert x.shape == (1, 64, 64) and label == 0
        np.testing.assert_allclose(x[0].numpy(), expected[index], atol=1e-6)
    flipped = SliceDataset(phantom_files, scale=64, seed=1, flips=True)
    mirrored = 0
    for index in range(32):
        x = flipped[index][0][0].numpy()
        is_flip = np.allclose(x, expected[index][:, ::-1], atol=1e-6)
        assert is_flip or np.allclose(x, expected[index], atol=1e-6)
        mirrored += is_flip
    assert 0 < mirrored < 32


def test_many_files_with_handle_eviction(phantom_files: list[Path]) -> None:
    files = phantom_files * 6  # 12 entries: more than the 8 files kept open at once
    expected = np.concatenate([hand_scaled(p, 2) for p in files])
    dataset = SliceDataset(files, scale=32)
    order = np.random.default_rng(0).permutation(len(dataset))
    for index in order:
        np.testing.assert_allclose(dataset[int(index)][0][0].numpy(), expected[index], atol=1e-6)


def test_window_dataset_edges(phantom_files: list[Path]) -> None:
    volumes = [hand_scaled(p, 2) for p in phantom_files]
    dataset = WindowDataset(phantom_files, scale=32)
    cases = {0: (0, [0, 0, 1]), 7: (0, [6, 7, 8]), 19: (0, [18, 19, 19]), 20: (1, [0, 0, 1])}
    cases[31] = (1, [10, 11, 11])
    for index, (v, slices) in cases.items():
        x, label = dataset[index]
        assert label == 1 and x.shape == (3, 32, 32)
        np.testing.assert_allclose(x.numpy(), volumes[v][slices], atol=1e-6)


def skimage_fbp(x: torch.Tensor) -> torch.Tensor:
    """An independent 8-view parallel-beam FBP of a (1, H, W) slice (scikit-image)."""
    theta = np.linspace(0.0, 180.0, 8, endpoint=False)
    image = x[0].numpy().astype(np.float64)
    sinogram = radon(image, theta=theta, circle=False)
    rec = iradon(sinogram, theta=theta, filter_name="ramp", circle=False, output_size=len(image))
    return torch.from_numpy(rec.astype(np.float32))[None]


def test_fbp_pairs(phantom_files: list[Path]) -> None:
    volumes = [hand_scaled(p, 1) for p in phantom_files]
    dataset = FBPPairDataset(phantom_files, 64, skimage_fbp)
    fbp, gt = dataset[23]
    assert fbp.shape == gt.shape == (1, 64, 64)
    np.testing.assert_allclose(gt[0].numpy(), volumes[1][3], atol=1e-6)
    np.testing.assert_allclose(fbp.numpy(), skimage_fbp(gt).numpy(), atol=1e-6)
    noisy = FBPPairDataset(phantom_files, 64, lambda x: x + torch.randn_like(x), seed=2)
    assert torch.equal(noisy[4][0], noisy[4][0]) and not torch.equal(noisy[4][0], noisy[5][0])
    bad = FBPPairDataset(phantom_files, 64, lambda x: x[0])
    with pytest.raises(DataError, match=r"expected a tensor of shape \(1, 64, 64\)"):
        bad[0]


def test_bad_inputs(phantom_files: list[Path], tmp_path: Path) -> None:
    flat = tmp_path / "flat.h5"
    with h5py.File(flat, "w") as f:
        f["hu"] = np.zeros((64, 64), np.int16)
    with pytest.raises(DataError, match="flat.h5"):
        SliceDataset([flat], scale=32)
    with pytest.raises(DataError, match="at least 13 slices"):
        SliceGroupDataset([phantom_files[1]], scale=32, gap_mix={6: 1.0})
    with pytest.raises(DataError, match="empty list"):
        SliceDataset([], scale=32)
    with pytest.raises(DataError, match="cpu128"):
        SliceDataset(phantom_files, scale="cpu100")
    with pytest.raises(DataError, match="gap_mix"):
        SliceGroupDataset(phantom_files, gap_mix={0: 1.0})


# --- real data ----------------------------------------------------------------------------------


def test_manifest_split(ct_dir: Path) -> None:
    """The split equals the role each file records itself (``suggested_role``), whatever the set."""
    split = manifest_split(ct_dir)
    roles = {"train": "train", "test": "test", "ood_test": "ood"}
    expected: dict[str, set[str]] = {role: set() for role in split}
    for path in sorted(ct_dir.glob("*.h5")):
        with h5py.File(path, "r") as f:
            expected[roles[str(f.attrs["suggested_role"])]].add(path.name)
    assert {role: {p.name for p in paths} for role, paths in split.items()} == expected
    assert split["test"] and split["ood"] and len(split["train"]) >= 3
    listed = [p.name for paths in split.values() for p in paths]
    assert len(listed) == len(set(listed))  # no volume has two roles


def test_manifest_split_errors(tmp_path: Path) -> None:
    table = "| name | shape | suggested role |\n|---|---|---|\n| `a` | 1 | **train** |\n"
    (tmp_path / "MANIFEST.md").write_text("# Volumes\n\n" + table + "| `b` | 2 | **valid** |\n")
    (tmp_path / "a.h5").write_bytes(b"")
    (tmp_path / "b.h5").write_bytes(b"")
    with pytest.raises(DataError, match="'b' has role"):
        manifest_split(tmp_path)
    (tmp_path / "MANIFEST.md").write_text(table + "| `c` | 3 | out-of-distribution test |\n")
    with pytest.raises(DataError, match="c.h5 does not exist"):
        manifest_split(tmp_path)
    (tmp_path / "c.h5").write_bytes(b"")
    assert {k: [p.name for p in v] for k, v in manifest_split(tmp_path).items()} == {
        "train": ["a.h5"],
        "test": [],
        "ood": ["c.h5"],
    }


def test_real_groups_are_real_slices(ct_dir: Path) -> None:
    path = ct_dir / "cptac_lscc_head.h5"
    dataset = SliceGroupDataset([path], scale="cpu128", seed=11)
    assert check_groups(dataset, [hand_scaled(path, 2)], 12) == {1, 3}


def rss_mib() -> float:
    """Current resident memory of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("VmRSS missing from /proc/self/status")


def test_memory_flat_over_all_real_volumes(ct_dir: Path) -> None:
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs /proc/self/status (Linux) to read the resident memory")
    files = sorted(ct_dir.glob("*.h5"))
    depths = []
    for path in files:
        with h5py.File(path, "r") as f:
            depths.append(f["hu"].shape[0])
    dataset = SliceDataset(files, scale="cpu128")
    assert len(dataset) == sum(depths)
    for index in range(50):
        dataset[index]
    start, peak = rss_mib(), 0.0
    for index in range(50, len(dataset)):
        dataset[index]
        if index % 25 == 0:
            peak = max(peak, rss_mib())
    # All volumes in memory would be sum(depths) x 256² int16 (933 slices: 117 MiB; 4x as float32).
    assert max(peak, rss_mib()) - start < 16, f"memory grew from {start:.0f} to {peak:.0f} MiB"


@pytest.mark.parametrize("cls", [SliceGroupDataset, SliceDataset, WindowDataset])
def test_holdout_slab_is_disjoint_from_training_items(phantom_files: list[Path], cls) -> None:
    """z_range (0, 0.6) and (0.6, 1): no training item reads a slice of the validation slab."""
    depths = (20, 12)
    train = cls(phantom_files, scale=64, z_range=(0.0, 0.6))
    slab = cls(phantom_files, scale=64, z_range=(0.6, 1.0))
    cut = {f: round(0.6 * d) for f, d in zip(phantom_files, depths, strict=True)}
    seen_train = {
        (train.locate(i).file, s) for i in range(len(train)) for s in train.locate(i).slices
    }
    seen_slab = {(slab.locate(i).file, s) for i in range(len(slab)) for s in slab.locate(i).slices}
    depth = dict(zip(phantom_files, depths, strict=True))
    assert all(s < cut[f] for f, s in seen_train)
    assert all(cut[f] <= s < depth[f] for f, s in seen_slab)
    assert {f for f, _ in seen_slab} == set(phantom_files)  # every volume gives validation data
    volumes = [hand_scaled(p, 1) for p in phantom_files]
    x, _ = slab[len(slab) - 1]
    for channel in x:  # the items are the volumes' own slices
        v, k = find_slice(channel.numpy(), volumes)
        assert k >= cut[phantom_files[v]]


def test_z_range_must_be_an_ordered_fraction_pair(phantom_files: list[Path]) -> None:
    for bad in ((0.5, 0.5), (-0.1, 0.5), (0.2, 1.5)):
        with pytest.raises(DataError, match="z_range"):
            SliceDataset(phantom_files, scale=64, z_range=bad)
