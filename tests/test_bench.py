"""ctblend bench: quick run writes complete tables, resumes without recomputing, records skips."""

from __future__ import annotations

import argparse
import csv
import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import torchrun
from scipy.ndimage import distance_transform_edt
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import operators as ops
from ctblend.baselines import FBPUNetSpec, save_fbp_unet
from ctblend.baselines.fbp_unet import ResidualUNet
from ctblend.bench import BenchConfig, add_arguments, cell_plan, config_from_args, run_bench
from ctblend.data import ct_phantom
from ctblend.models.unet import UNetConfig
from ctblend.training import BlobDataset, load_config, train

SIZE = 32
WEIGHTS = Path(__file__).resolve().parents[1] / "ctblend" / "weights"
#: What protocol.md asks every table to hold (written out here, not taken from the module).
REQUIRED = [
    "volume",
    "protocol",
    "method",
    "ablation",
    "seed",
    "status",
    *(
        f"{plane}_{metric}{suffix}"
        for plane in ("axial", "coronal", "sagittal")
        for metric in ("psnr", "ssim", "psnr_body", "ssim_body")
        for suffix in ("", "_std")
    ),
    "volume_psnr",
    "tv_z",
    "tv_z_truth",
    "seconds",
    "nfe",
    "peak_mem_mb",
    "machine",
]
MD_HEADERS = ["axial PSNR", "coronal SSIM", "sagittal PSNR", "volume PSNR", "TV-z", "NFE", "peak"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def blendpp_prior(tmp_path_factory):
    """A tiny DiffusionBlend++ prior at 32² (quality irrelevant: it only has to run)."""
    out = tmp_path_factory.mktemp("prior") / "run"
    cfg = load_config(
        "tiny", phases=[{"steps": 10}], batch_size=4, warmup_steps=2, checkpoint_every=10
    )
    train(cfg, BlobDataset(64, SIZE), out, command="test", progress=False)
    return out


def _quick(tmp_path, **changes) -> BenchConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--quick", "--out", str(tmp_path / "bench"), "--volumes", "phantom:8"]
    )
    return replace(config_from_args(args), precision="fp32", **changes)


def _identity_fbp_unet(folder, protocol: str) -> None:
    """An untrained FBP-UNet: its zero-initialised last layer makes it return FBP exactly."""
    unet = UNetConfig(
        in_channels=1,
        out_channels=1,
        base_channels=8,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_levels=(),
        head_channels=8,
        norm_groups=4,
        gap_embedding=False,
    )
    spec = FBPUNetSpec(protocol=protocol, image_size=SIZE, unet=unet)
    save_fbp_unet(folder / protocol, spec, ResidualUNet(unet).state_dict())


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_quick_writes_every_column_and_matches_independent_scores(tmp_path, blendpp_prior):
    nets = tmp_path / "nets"
    _identity_fbp_unet(nets, "svct8")  # none for lact90: that cell must be a recorded skip
    config = _quick(
        tmp_path,
        protocols=("svct8", "lact90"),
        prior_blendpp=str(blendpp_prior),
        fbp_unet=str(nets),
        ablations=("partition=fixed",),
    )
    rows = run_bench(config)
    out = tmp_path / "bench"

    by = {(r["protocol"], r["method"], r["ablation"]): r for r in rows}
    assert len(rows) == 2 * 6  # 5 methods + 1 ablation, 2 protocols
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) == 11
    skipped = by[("lact90", "fbp-unet", "default")]
    assert skipped["status"].startswith("skipped: no prior") and "lact90" in skipped["status"]
    assert skipped["axial_psnr"] is None

    # Every table file holds every column, for done and skipped rows alike.
    csv_rows = _rows(out / "results.csv")
    assert len(csv_rows) == len(rows) and set(REQUIRED) <= set(csv_rows[0])
    payload = json.loads((out / "results.json").read_text())
    assert all(set(REQUIRED) <= set(r) for r in payload["rows"])
    assert payload["config"]["seeds"] == [0] and payload["machine"]["cpu_count"] >= 1
    assert "resident set size" in payload["memory"]
    md = (out / "results.md").read_text()
    assert all(h in md for h in MD_HEADERS) and "skipped: no prior" in md
    assert "ablations" in md and "partition=fixed" in md and "4 NFE)" in md
    # The paper-style summary: one line per method, the best axial PSNR of a protocol in bold.
    summary = md.split("paper-table layout")[1].split("###")[0]
    assert summary.count("\n| ") == 1 + 5  # header + 5 methods
    best = max(
        r["axial_psnr"] for r in done if r["protocol"] == "svct8" and r["ablation"] == "default"
    )
    assert f"**{best:.2f}**" in summary
    assert sorted(p.name for p in (out / "panels").glob("*.png")) == [
        "phantom__lact90__all__default__seed0.png",
        "phantom__svct8__all__default__seed0.png",
    ]

    # Diffusion cells ran with the requested budget and recorded their seed.
    blend = by[("svct8", "diffusionblend++", "default")]
    assert blend["nfe"] == 4 and blend["seed"] == 0 and blend["config"]["seed"] == 0
    assert blend["prior"] == "run (10 steps, fp32)"
    assert by[("svct8", "diffusionblend++", "partition=fixed")]["config"]["partition"] == "fixed"

    # The FBP row against an independent computation: phantom → A → FBP → clip → scikit-image.
    truth = ct_phantom((8, SIZE, SIZE), seed=0).astype(np.float64)
    A = ops.Operator(ops.volume((8, SIZE, SIZE)), ops.parallel(8, 2 * SIZE))
    x = ops.fbp(A, A(torch.from_numpy(truth).float())).clamp(0, 1).double().numpy()
    psnr = [peak_signal_noise_ratio(truth[k], x[k], data_range=1.0) for k in range(8)]
    ssim = [structural_similarity(truth[k], x[k], data_range=1.0, win_size=7) for k in range(8)]
    fbp = by[("svct8", "fbp", "default")]
    assert fbp["axial_psnr"] == pytest.approx(np.mean(psnr), abs=1e-4)
    assert fbp["axial_psnr_std"] == pytest.approx(np.std(psnr), abs=1e-4)
    assert fbp["axial_ssim"] == pytest.approx(np.mean(ssim), abs=1e-4)
    assert fbp["volume_psnr"] == pytest.approx(
        peak_signal_noise_ratio(truth, x, data_range=1.0), abs=1e-4
    )
    assert fbp["tv_z_truth"] == pytest.approx(np.abs(np.diff(truth, axis=0)).mean(), rel=1e-5)
    # Inside the body: voxels within 3 of one above −500 HU (a Euclidean distance transform).
    body = distance_transform_edt(truth <= 524 / 4095) <= 3
    inside = [
        10 * np.log10(1 / ((x[k] - truth[k])[body[k]] ** 2).mean())
        for k in range(8)
        if body[k].sum() >= 50
    ]
    assert fbp["axial_psnr_body"] == pytest.approx(np.mean(inside), abs=1e-4)
    assert fbp["shape"] == "8x32x32" and fbp["nfe"] == 0
    with h5py.File(out / "volumes" / "phantom__svct8__fbp__default__seed0.h5") as f:
        np.testing.assert_allclose(f["recon"][...], x, atol=1e-3)  # float16 storage
    # An identity FBP-UNet scores exactly like FBP.
    unet = by[("svct8", "fbp-unet", "default")]
    assert unet["status"] == "done" and unet["prior"] == "svct8 (0 steps)"
    assert unet["axial_psnr"] == pytest.approx(fbp["axial_psnr"], abs=1e-6)


def test_resume_skips_finished_cells(tmp_path):
    config = _quick(tmp_path, methods=("fbp", "sirt", "diffusionblend++"), protocols=("svct8",))
    first = run_bench(config)
    cells = sorted((tmp_path / "bench" / "cells").glob("*.json"))
    assert [c.name for c in cells] == [
        "phantom__svct8__fbp__default__seed0.json",
        "phantom__svct8__sirt__default__seed0.json",
    ]  # the skipped diffusion cell is not cached
    stamps = {c.name: c.stat().st_mtime_ns for c in cells}
    (tmp_path / "bench" / "cells" / cells[0].name).unlink()  # as if killed before this cell

    second = run_bench(config)
    assert [r["finished_at"] for r in second][1] == [r["finished_at"] for r in first][1]
    assert (tmp_path / "bench" / "cells" / cells[1].name).stat().st_mtime_ns == stamps[
        cells[1].name
    ]
    assert (tmp_path / "bench" / "cells" / cells[0].name).is_file()  # recomputed
    assert second[0]["axial_psnr"] == pytest.approx(first[0]["axial_psnr"], abs=1e-9)
    assert second[2]["status"].startswith("skipped: no prior")
    shipped = WEIGHTS / "blendpp_cpu128" / "config.json"
    if shipped.is_file():  # shipped, but for another size: the reason names both sizes
        size = json.loads(shipped.read_text())["image_size"]
        assert f"blendpp_cpu128 is {size}²" in second[2]["status"]
        assert f"for {SIZE}²" in second[2]["status"]
    umask = os.umask(0)
    os.umask(umask)
    for cell in (tmp_path / "bench" / "cells").glob("*.json"):  # not private (mkstemp's 0600)
        assert stat.S_IMODE(cell.stat().st_mode) == 0o666 & ~umask

    with pytest.raises(ValueError, match="other settings.*config"):
        run_bench(replace(config, sirt_iterations=5))


def test_geometry_yaml_runs_the_same_table(tmp_path):
    geometry = tmp_path / "fan_short.yaml"
    geometry.write_text(
        "type: fan_flat\nangles: {count: 24, start_deg: 0, stop_deg: 240}\n"
        "det_count: 80\nsrc_orig: 80\norig_det: 40\n"
    )
    config = _quick(tmp_path, methods=("fbp", "sirt"), geometry=str(geometry))
    rows = run_bench(config)
    assert [(r["protocol"], r["status"]) for r in rows] == [("fan_short", "done")] * 2
    assert rows[1]["axial_psnr"] > rows[0]["axial_psnr"] - 10  # finite, sane numbers
    assert all(np.isfinite(r["volume_psnr"]) for r in rows)


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        BenchConfig(methods=("fbp", "magic"))
    with pytest.raises(ValueError, match="unknown protocol"):
        BenchConfig(protocols=("svct",))
    with pytest.raises(ValueError, match="--ct-dir"):
        run_bench(BenchConfig(out_dir=str(tmp_path / "b"), volumes=("test",), methods=("fbp",)))
    with pytest.raises(ValueError, match="does not exist"):
        run_bench(_quick(tmp_path, prior_blendpp=str(tmp_path / "missing")))


def test_real_volume_z_range(tmp_path, ct_dir):
    """A z-range of a MANIFEST test volume at 32²: truth scaled as protocol.md says."""
    config = _quick(
        tmp_path, volumes=("test",), ct_dir=str(ct_dir), z_range=(40, 44), methods=("fbp",)
    )
    config = replace(config, protocols=("svct8",))
    (row,) = run_bench(config)
    assert row["volume"] == "cptac_pda_chest" and row["shape"] == "4x32x32"
    with h5py.File(ct_dir / "cptac_pda_chest.h5") as f:
        hu = f["hu"][40:44].astype(np.float64)
    unit = (np.clip(hu, -1024, 3071) + 1024) / 4095
    truth = unit.reshape(4, 32, 8, 32, 8).mean(axis=(2, 4))  # 8×8 block mean: 256² → 32²
    A = ops.Operator(ops.volume((4, SIZE, SIZE)), ops.parallel(8, 2 * SIZE))
    x = ops.fbp(A, A(torch.from_numpy(truth).float())).clamp(0, 1).double().numpy()
    assert row["volume_psnr"] == pytest.approx(
        peak_signal_noise_ratio(truth, x, data_range=1.0), abs=1e-3
    )


def test_peak_memory_sees_a_known_allocation():
    """100 MiB written inside the block show up as ~100 MiB of peak RSS growth."""
    from ctblend.bench import PeakMemory

    with PeakMemory() as memory:
        block = np.ones(100 * 2**20, dtype=np.uint8)
        block[::4096] = 2  # touch every page
        time.sleep(0.2)  # held long enough for the 5 ms sampler to run on a busy machine
        del block
    assert 95 <= memory.peak_mb <= 140, memory.peak_mb


def test_command_line_options(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--out", str(tmp_path), "--protocols", "svct8", "lact90", "--with-noise", "--ablations"]
    )
    config = config_from_args(args)
    assert config.protocols == ("svct8", "lact90", "svct8+noise", "lact90+noise")
    assert len(config.ablations) == 10 and config.scale == "cpu128" and config.seeds == (0,)
    assert {"consistency=admm-tvz", "eps_from=x0"} <= set(config.ablations)
    quick = config_from_args(
        parser.parse_args(["--quick", "--scale", "64", "--nfe", "7", "--precision", "bf16"])
    )
    assert quick.size == 64 and quick.nfe == 7 and quick.volumes == ("phantom:18",)
    assert quick.precision == "bf16" and config.precision == "auto"
    with pytest.raises(ValueError, match="precision"):
        BenchConfig(precision="fp16")


@pytest.mark.skipif(
    not any(f in Path("/proc/cpuinfo").read_text() for f in ("avx512_bf16", "amx_bf16"))
    if Path("/proc/cpuinfo").is_file()
    else True,
    reason="no native bf16 on this CPU: bf16 runs as fp32 here (see test_cli.py)",
)
def test_bf16_cells_are_labelled_and_never_mixed_with_fp32(tmp_path, blendpp_prior):
    """bf16 runs the same sampler (ε within ~1 %, so PSNR within a fraction of a dB of fp32) and
    records its precision; an fp32 folder refuses to resume as bf16."""
    config = _quick(
        tmp_path,
        methods=("diffusionblend++",),
        protocols=("svct8",),
        prior_blendpp=str(blendpp_prior),
    )
    (fp32,) = run_bench(config)
    with pytest.raises(ValueError, match="other settings.*prior"):
        run_bench(replace(config, precision="bf16"))
    (bf16,) = run_bench(replace(config, precision="bf16", out_dir=str(tmp_path / "bf16")))
    assert fp32["prior"].endswith("fp32)") and bf16["prior"].endswith("bf16)")
    assert bf16["axial_psnr"] == pytest.approx(fp32["axial_psnr"], abs=0.5)


def test_an_ablation_equal_to_the_default_cell_is_not_run_twice(tmp_path):
    at_200 = _quick(tmp_path, nfe=None, ablations=("nfe=50", "nfe=200"))
    at_50 = _quick(tmp_path, nfe=50, ablations=("nfe=50", "nfe=100", "nfe=200"))
    ablations = [a for m, a in cell_plan(at_200) if a != "default"]
    assert ablations == ["nfe=50"]
    assert [a for m, a in cell_plan(at_50) if a != "default"] == ["nfe=100", "nfe=200"]


def _table_numbers(out: Path) -> list[dict]:
    """results.csv without what differs between runs (time, memory, machine, clock)."""
    varying = ("seconds", "peak_mem_mb", "gpu_peak_mb", "machine", "finished_at")
    return [{k: v for k, v in r.items() if k not in varying} for r in _rows(out / "results.csv")]


def test_two_processes_share_the_cells_and_write_the_tables_of_one(tmp_path, blendpp_prior):
    """torchrun --nproc_per_node 2 (gloo): every cell computed once, by one rank; rank 0
    writes tables equal to a one-process run's; a rerun computes nothing."""
    common = [
        "--quick", "--volumes", "phantom:9", "--methods", "fbp", "sirt", "tv",
        "diffusionblend++", "--prior-blendpp", str(blendpp_prior), "--precision", "fp32",
        "--no-volumes",
    ]  # fmt: skip
    one = subprocess.run(
        [sys.executable, "-m", "ctblend.bench", "--out", str(tmp_path / "one"), *common],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun("-m", "ctblend.bench", "--out", tmp_path / "two", *common, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert _table_numbers(tmp_path / "two") == _table_numbers(tmp_path / "one")
    ran = two.stderr.count(": running")
    assert ran == len(_rows(tmp_path / "one/results.csv")) == 8  # 4 methods × 2 protocols
    again = torchrun("-m", "ctblend.bench", "--out", tmp_path / "two", *common, timeout=600)
    assert again.returncode == 0 and again.stderr.count(": running") == 0


def test_posterior_samples_columns(tmp_path, blendpp_prior):
    config = _quick(
        tmp_path,
        methods=("diffusionblend++",),
        protocols=("lact90",),
        prior_blendpp=str(blendpp_prior),
        samples=3,
    )
    rows = run_bench(config)
    row = rows[0]
    assert row["status"] == "done" and row["config"]["samples"] == 3
    assert row["std_body"] > 0 and -1 <= row["std_error_spearman"] <= 1
    assert 0 <= row["within_2std"] <= 1
    md = (Path(config.out_dir) / "results.md").read_text()
    assert "posterior samples (mean of K" in md
    with pytest.raises(ValueError, match="samples=0; expected an integer >= 1"):
        replace(config, samples=0)


def test_bad_volumes_leave_no_output_folder_and_one_bench_holds_a_folder(tmp_path):
    """Red before: the folder was made before the volumes resolved."""
    out = tmp_path / "new" / "bench"
    with pytest.raises(Exception, match="no_such_volume"):
        run_bench(_quick(tmp_path, out_dir=str(out), volumes=("no_such_volume.h5",)))
    assert not out.exists() and not out.parent.exists()
    from ctblend.io.output import single_writer

    held = tmp_path / "held"
    with single_writer(held), pytest.raises(ValueError, match="another process is writing it"):
        run_bench(_quick(tmp_path, out_dir=str(held), methods=("fbp",)))
