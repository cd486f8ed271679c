"""The demo's shipped real-CT excerpt and what ``run_demo`` shows (in-process, short settings)."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from ctblend.data.phantom import ct_phantom
from ctblend.demo import run_demo

REPO = Path(__file__).resolve().parents[1]
EXCERPT = REPO / "ctblend" / "data" / "excerpts" / "cptac_pda_chest_excerpt.h5"


def test_the_shipped_excerpt_is_small_licensed_and_packaged():
    assert EXCERPT.stat().st_size <= 2_000_000
    licence = (EXCERPT.parent / "LICENSE.md").read_text()
    assert "CC BY 3.0" in licence and "https://doi.org/10.7937/K9/TCIA.2018.SC20FO18" in licence
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    packaged = [p.strip() for p in setup["options.package_data"]["ctblend"].split(",")]
    assert "data/excerpts/*.h5" in packaged and "data/excerpts/*.md" in packaged
    with h5py.File(EXCERPT, "r") as f:
        assert f["hu"].dtype == np.int16 and f["hu"].shape == (48, 128, 128)
        assert f["hu"].compression == "gzip"


def test_the_excerpt_is_the_central_test_slices_at_cpu128(ct_dir):
    """Independent of the script that made it: h5py, a reshape-mean and the manifest's role."""
    with h5py.File(ct_dir / "cptac_pda_chest.h5", "r") as f:
        full, spacing = f["hu"][...].astype(np.float64), f.attrs["spacing_mm"]
    start = (full.shape[0] - 48) // 2
    expected = np.rint(full[start : start + 48].reshape(48, 128, 2, 128, 2).mean(axis=(2, 4)))
    with h5py.File(EXCERPT, "r") as f:
        np.testing.assert_array_equal(f["hu"][...], expected.astype(np.int16))
        np.testing.assert_allclose(f.attrs["spacing_mm"], spacing * [1, 2, 2])
    row = next(
        line
        for line in (ct_dir / "MANIFEST.md").read_text().splitlines()
        if line.startswith("| `cptac_pda_chest` |")
    )
    assert row.rstrip(" |").endswith("**test**")  # never training data


def test_demo_runs_on_the_excerpt_and_shows_the_tables_numbers(tmp_path, capsys):
    result = run_demo(
        out_dir=tmp_path / "d", quick=True, methods=("fbp", "sirt", "tv"), log=lambda _: None
    )
    with h5py.File(EXCERPT, "r") as f:
        hu = f["hu"][19:28].astype(np.float64)  # the 9 central of 48 slices
    expected = (np.clip(hu, -1024, 3071) + 1024) / 4095
    with h5py.File(result.files["hdf5"], "r") as f:
        truth = f["truth"][...]
        recons = {m: f[f"recon/{m}"][...] for m in ("fbp", "sirt", "tv")}
    np.testing.assert_allclose(truth, expected, atol=1e-6)
    rows = {line.split("|")[1].strip(): line for line in result.table.splitlines()[2:]}
    for method, recon in recons.items():
        psnr = peak_signal_noise_ratio(
            truth.astype(np.float64), np.clip(recon.astype(np.float64), 0, 1), data_range=1.0
        )
        shown = f"{psnr:.2f}"
        assert f"PSNR {shown} dB" in result.figure.axes[("axial", method)].get_title()
        assert f"| {shown} |" in rows[method]  # the figure's number is in the table
    figure = result.figure.figure  # the profile's legend sits right of the curves, not on them
    renderer = figure.canvas.get_renderer()
    legend = result.figure.profile.get_legend().get_window_extent(renderer)
    assert legend.x0 >= result.figure.profile.get_window_extent(renderer).x1
    progress = capsys.readouterr().err
    assert re.search(r"sirt: .*\d+/50 ", progress)  # SIRT and TV show progress bars
    assert re.search(r"tv: .*\d+/30 ", progress)
    umask = os.umask(0)
    os.umask(umask)
    for path in result.files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_demo_phantom_keeps_the_procedural_phantom(tmp_path):
    result = run_demo(
        out_dir=tmp_path,
        phantom=True,
        n_slices=4,
        size=32,
        methods=("fbp",),
        progress=False,
        log=lambda _: None,
    )
    with h5py.File(result.files["hdf5"], "r") as f:
        np.testing.assert_array_equal(f["truth"][...], ct_phantom((4, 32, 32), seed=0))
    with pytest.raises(ValueError, match="expected one"):
        run_demo(EXCERPT, tmp_path / "x", phantom=True)
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="no git")
def test_the_demo_output_folder_is_git_ignored():
    proc = subprocess.run(
        ["git", "check-ignore", "-q", "ctblend_demo/demo.png"], cwd=REPO, check=False
    )
    assert proc.returncode == 0


def test_demo_shows_dds_and_the_std_of_posterior_samples(tmp_path):
    """DDS (the method that beat DiffusionBlend++) sits beside it; --samples 2 stores each
    diffusion method's std and draws its uncertainty rows."""
    result = run_demo(
        out_dir=tmp_path / "d",
        quick=True,
        nfe=2,
        samples=2,
        methods=("fbp", "dds", "diffusionblend++"),
        log=lambda _: None,
        progress=False,
    )
    assert list(result.scores) == ["fbp", "dds", "diffusionblend++"]
    with h5py.File(result.files["hdf5"]) as f:
        for method in ("dds", "diffusionblend++"):
            std = f[f"std/{method}"][...]
            assert std.shape == f[f"recon/{method}"].shape and std.mean() > 0
        assert "std/fbp" not in f
    assert ("axial std", "dds") in result.figure.axes
    assert "| dds |" in result.table
