"""The ``ctblend`` command driven as a user would: subprocesses, files, exit codes, messages."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from skimage.metrics import peak_signal_noise_ratio

import operators as ops
from ctblend.cli import main
from ctblend.data.phantom import ct_phantom, phantom_spacing_mm
from ctblend.io import read_volume, write_hdf5
from ctblend.models.unet import UNet
from ctblend.priors.loading import PriorSpec, save_prior
from ctblend.training import load_config

COMMANDS = ("demo", "simulate", "recon", "train", "sample", "bench", "info", "train-fbp-unet")
ENV = {**os.environ, "CI": "true", "OMP_NUM_THREADS": "1"}


def ctblend(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ctblend", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def attrs_of(path: Path) -> dict:
    """File attributes with the JSON-encoded ones decoded (the ctblend HDF5 convention)."""
    with h5py.File(path, "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
    for key in json.loads(attrs.pop("json_attrs")):
        attrs[key] = json.loads(attrs[key])
    return attrs


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def tiny_prior(folder: Path, kind: str) -> Path:
    """A randomly initialised tiny prior (32², ~0.2 M parameters) saved as a checkpoint."""
    cfg = load_config("tiny", kind=kind)
    torch.manual_seed(0)
    spec = PriorSpec(kind=kind, image_size=32, unet=cfg.unet, schedule=cfg.schedule)
    return save_prior(folder, spec, UNet(cfg.unet).state_dict())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with a simulated phantom (6 × 32², svct8) and two tiny priors."""
    root = tmp_path_factory.mktemp("cli")
    ok(
        ctblend(
            "simulate",
            "phantom",
            "--phantom-slices",
            6,
            "--scale",
            32,
            "--out",
            "sino.h5",
            cwd=root,
        )
    )
    tiny_prior(root / "prior_slice2d", "slice2d")
    tiny_prior(root / "prior_blendpp", "blend++")
    return root


def test_every_subcommand_has_help(tmp_path):
    proc = ok(ctblend("--help", cwd=tmp_path))
    for command in COMMANDS:
        assert command in proc.stdout
    for command in COMMANDS:
        proc = ctblend(command, "--help", cwd=tmp_path)
        if command in ("bench", "train-fbp-unet") and proc.returncode != 0:  # other modules
            assert proc.stderr.strip().startswith(f"ctblend: error: the {command} command needs")
            continue
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"usage: ctblend {command}")


def test_simulate_writes_sinogram_truth_and_metadata(work):
    truth = ct_phantom((6, 32, 32), seed=0)
    A = ops.Operator(ops.volume((6, 32, 32)), ops.parallel(8, 64))  # svct8 at 32²: 2N unit bins
    with h5py.File(work / "sino.h5", "r") as f:
        np.testing.assert_array_equal(f["truth"][...], truth)
        sinogram = f["sinogram"][...]
    np.testing.assert_allclose(sinogram, A(torch.from_numpy(truth)).numpy(), rtol=1e-5, atol=1e-4)
    attrs = attrs_of(work / "sino.h5")
    assert attrs["kind"] == "ctblend-measurements"
    assert attrs["protocol"] == "svct8" and not attrs["noise"]
    assert attrs["geometry"]["type"] == "parallel"
    assert attrs["geometry"]["angles_deg"] == pytest.approx([22.5 * k for k in range(8)])
    assert attrs["geometry"]["det_count"] == 64
    assert attrs["volume_shape"] == [6, 32, 32]
    np.testing.assert_allclose(attrs["spacing_mm"], phantom_spacing_mm((6, 32, 32)))
    assert attrs["seed"] == 0 and attrs["scale"] == "32"
    assert "torch" in attrs["versions"]
    assert (work / "sino.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recon_fbp_writes_volume_metadata_metrics_and_figure(work):
    proc = ok(ctblend("recon", "sino.h5", "--method", "fbp", "--out", "fbp.h5", cwd=work))
    assert "wrote fbp.h5" in proc.stdout
    with h5py.File(work / "sino.h5", "r") as f:
        truth, sinogram = f["truth"][...], torch.from_numpy(f["sinogram"][...])
    A = ops.Operator(ops.volume((6, 32, 32)), ops.parallel(8, 64))
    expected = ops.fbp(A, sinogram).numpy()
    with h5py.File(work / "fbp.h5", "r") as f:
        recon = f["recon"][...]
    np.testing.assert_allclose(recon, expected, rtol=1e-5, atol=1e-5)
    attrs = attrs_of(work / "fbp.h5")
    assert attrs["kind"] == "ctblend-recon" and attrs["method"] == "fbp"
    assert attrs["config"] == {"filter": "ram-lak"}
    assert attrs["seed"] == 0 and attrs["protocol"] == "svct8"
    assert attrs["timings"]["total_s"] >= attrs["timings"]["reconstruct_s"] > 0
    clipped = np.clip(recon.astype(np.float64), 0, 1)
    axial = np.mean([peak_signal_noise_ratio(truth[k], clipped[k], data_range=1) for k in range(6)])
    assert attrs["metrics"]["axial_psnr"] == pytest.approx(axial, rel=1e-4)
    assert attrs["metrics"]["tv_z"] == pytest.approx(np.abs(np.diff(clipped, axis=0)).mean(), 1e-4)
    assert (work / "fbp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = ok(ctblend("recon", "sino.h5", "--method", "fbp", "--out", "fbp.h5", cwd=work))
    assert "skip fbp.h5" in again.stdout  # existing outputs are kept


def test_recon_config_yaml_and_overrides(work):
    (work / "opts.yaml").write_text(
        yaml.safe_dump({"method": "sirt", "options": {"iterations": 4}, "out": "sirt.h5"})
    )
    ok(ctblend("recon", "sino.h5", "--config", "opts.yaml", "iterations=2", cwd=work))
    attrs = attrs_of(work / "sirt.h5")
    assert attrs["method"] == "sirt" and attrs["config"] == {"iterations": 2}  # command line wins


def test_recon_with_a_diffusion_prior(work):
    ok(
        ctblend(
            "recon",
            "sino.h5",
            "--method",
            "dds2d",
            "--prior",
            "prior_slice2d",
            "--nfe",
            2,
            "--seed",
            3,
            "--out",
            "dds2d.h5",
            cwd=work,
        )
    )
    attrs = attrs_of(work / "dds2d.h5")
    assert attrs["nfe"] == 2 and attrs["seed"] == 3 and attrs["config"]["cg_iters"] == 5
    assert attrs["prior"].endswith("prior_slice2d")
    assert attrs["timings"]["prior_s"] > 0


def test_simulate_custom_geometry_and_recon_a_volume_file(work, tmp_path):
    hu = (ct_phantom((4, 32, 32), seed=2) * 4095 - 1024).astype(np.float32)
    write_hdf5(tmp_path / "vol.h5", hu, spacing_mm=(2.0, 12.5, 12.5))
    (tmp_path / "fan.yaml").write_text(
        "type: fan_flat\nangles: 30\ndet_count: 48\ndet_spacing: 1.5\nsrc_orig: 64\norig_det: 32\n"
    )
    ok(
        ctblend(
            "simulate",
            "vol.h5",
            "--geometry",
            "fan.yaml",
            "--scale",
            32,
            "--out",
            "fan.h5",
            cwd=tmp_path,
        )
    )
    A = ops.Operator(ops.volume((4, 32, 32)), ops.fan_flat(30, 48, 1.5, 64, 32))
    x = (np.clip(hu, -1024, 3071) + 1024) / 4095
    with h5py.File(tmp_path / "fan.h5", "r") as f:
        np.testing.assert_allclose(f["truth"][...], x, atol=1e-6)
        np.testing.assert_allclose(
            f["sinogram"][...], A(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-3
        )
    assert attrs_of(tmp_path / "fan.h5")["geometry"]["src_orig"] == 64
    # a volume + protocol straight into recon, with noise and a seed
    ok(
        ctblend(
            "recon",
            "vol.h5",
            "--protocol",
            "svct4",
            "--noise",
            "--scale",
            32,
            "--method",
            "sirt",
            "iterations=3",
            "--seed",
            5,
            "--out",
            "r.h5",
            cwd=tmp_path,
        )
    )
    attrs = attrs_of(tmp_path / "r.h5")
    assert attrs["protocol"] == "svct4+noise" and attrs["noise"] and attrs["seed"] == 5
    assert attrs["config"] == {"iterations": 3} and np.isfinite(attrs["metrics"]["volume_psnr"])


def _error_cases(work: Path, tmp_path: Path) -> dict[str, tuple[list, str]]:
    """name → (arguments, text the one-line message must contain); every case writes a.h5, but
    the first three, which run at once: one writer per output would refuse the second."""
    (tmp_path / "model.pt").write_bytes(b"\x80\x04not really a pickle")
    (tmp_path / "nodet.yaml").write_text("type: parallel\nangles: 8\n")
    (tmp_path / "bad.yaml").write_text("nfe: 3\nflavour: strong\n")
    (tmp_path / "notes.h5").write_text("a text file, renamed\n")
    data = (work / "sino.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    hu = (ct_phantom((4, 32, 32), seed=1) * 4095 - 1024).astype(np.float32)
    write_hdf5(tmp_path / "volume.h5", hu, spacing_mm=(2.0, 12.5, 12.5))
    np.save(tmp_path / "plain.npy", hu)
    np.savez(
        tmp_path / "inf.npz", hu=np.full((4, 32, 32), np.inf, np.float32), spacing_mm=[1, 1, 1]
    )
    cone = "type: cone\nangles: 8\nsrc_orig: 256\norig_det: 256\n"
    (tmp_path / "cone1020.yaml").write_text(cone + "det_shape: [10, 20]\n")
    (tmp_path / "inside.yaml").write_text(cone.replace("256\no", "10\no") + "det_shape: [99, 99]\n")
    (tmp_path / "fan16.yaml").write_text(
        "type: fan_flat\nangles: 8\ndet_count: 16\nsrc_orig: 256\norig_det: 256\n"
    )
    sino = work / "sino.h5"
    phantom32 = ["simulate", "phantom", "--phantom-slices", 4, "--scale", 32]
    return {
        "cone detector of 10 x 20 pixels": (
            [*phantom32, "--geometry", "cone1020.yaml", "--out", "c.h5"],
            "cone1020.yaml on a 4 × 32 × 32 volume: the detector (10 × 20 pixels) does not cover",
        ),
        "fan detector of 16 bins": (
            ["recon", "volume.h5", "--geometry", "fan16.yaml", "--scale", 32, "--out", "f.h5"],
            "the detector (16 bins) does not cover",
        ),
        "source inside the volume": (
            [*phantom32, "--geometry", "inside.yaml", "--out", "s.h5"],
            "the source at view 0 (0, -10, 0) lies inside or on the 32 × 32 × 4 volume box",
        ),
        "all-inf volume": (
            ["recon", "inf.npz", "--protocol", "svct8", "--out", "a.h5"],
            "inf.npz: 4096 of 4096 values are NaN or inf",
        ),
        "scale beyond the memory": (
            ["recon", "phantom", "--protocol", "svct8", "--scale", 100000, "--out", "a.h5"],
            "phantom: a 36 × 100000 × 100000 volume needs ~",
        ),
        "npy without spacing": (
            ["recon", "plain.npy", "--protocol", "svct8", "--out", "a.h5"],
            "(--spacing DZ,DY,DX on the command line)",
        ),
        "bad spacing": (
            ["recon", "plain.npy", "--spacing", "3,1", "--protocol", "svct8", "--out", "a.h5"],
            "expected three positive numbers DZ,DY,DX",
        ),
        "an FBP-UNet as a diffusion prior": (
            ["recon", sino, "--method", "dds", "--prior", "fbpunet_cpu128_svct8", "--out", "a.h5"],
            "an FBP-UNet network (for protocol svct8), not a diffusion prior",
        ),
        "eta out of range, refused before the (broken) prior is read": (
            [
                "recon",
                sino,
                "--method",
                "diffusionblend++",
                "eta=5",
                "--prior",
                tmp_path / "model.pt",
                "--out",
                "a.h5",
            ],
            "eta=5",
        ),
        "nfe beyond the prior's timesteps": (
            ["recon", sino, "--method", "diffusionblend++", "--nfe", 100000, "--out", "a.h5"],
            "diffusionblend++: option nfe=100000; expected an integer in [1, 1000]",
        ),
        "sample eta out of range": (
            ["sample", "--eta", 5, "--out", "a.h5"],
            "expected a number in [0, 1]",
        ),
        "bench into an unwritable folder": (
            ["bench", "--quick", "--out", "/proc/bench"],
            "/proc/bench",
        ),
        "missing input": (["recon", tmp_path / "missing.h5", "--out", "a.h5"], "missing.h5"),
        "unknown method": (["recon", sino, "--method", "magic", "--out", "a.h5"], "'magic'"),
        "mismatched checkpoint": (
            [
                "recon",
                sino,
                "--method",
                "diffusionblend++",
                "--prior",
                work / "prior_slice2d",
                "--out",
                "a.h5",
            ],
            "'slice2d' prior",
        ),
        "missing volume": (["simulate", tmp_path / "nope.nii", "--out", "a.h5"], "nope.nii"),
        "unknown option": (
            ["recon", sino, "nfe=3", "--out", "a.h5"],
            "fbp: option 'nfe' is not used by this method",
        ),
        "pickle checkpoint": (
            ["recon", sino, "--method", "dds", "--prior", tmp_path / "model.pt", "--out", "a.h5"],
            "model.pt: not a ctblend checkpoint",
        ),
        "wrong image size": (
            [
                "recon",
                "phantom",
                "--protocol",
                "svct8",
                "--scale",
                64,
                "--method",
                "diffusionblend++",
                "--prior",
                work / "prior_blendpp",
                "--out",
                "a.h5",
            ],
            "trained at 32×32",
        ),
        "bad geometry": (
            ["simulate", "phantom", "--geometry", "nodet.yaml", "--out", "a.h5"],
            "'det_count' is missing",
        ),
        "volume without protocol": (["recon", "phantom", "--out", "a.h5"], "--protocol"),
        "bad slices": (["simulate", "phantom", "--slices", "5:2", "--out", "a.h5"], "5:2"),
        "bad config": (["recon", sino, "--config", "bad.yaml", "--out", "a.h5"], "'flavour'"),
        "bad protocol": (
            ["simulate", "phantom", "--protocol", "svct", "--out", "a.h5"],
            "unknown protocol 'svct'",
        ),
        "negative iterations": (
            ["recon", sino, "--method", "sirt", "iterations=-5", "--out", "a.h5"],
            "iterations=-5",
        ),
        "zero tv iterations": (
            ["recon", sino, "--method", "tv", "iterations=0", "--out", "a.h5"],
            "iterations=0",
        ),
        "text renamed .h5": (["recon", tmp_path / "notes.h5", "--out", "a.h5"], "not an HDF5 file"),
        "truncated .h5": (["recon", tmp_path / "cut.h5", "--out", "a.h5"], "truncated HDF5 file"),
        "a volume without a protocol": (
            ["recon", tmp_path / "volume.h5", "--out", "a.h5"],
            "is a volume (an HDF5 volume",
        ),
        "unwritable recon output": (["recon", sino, "--out", "/proc/a.h5"], "--out /proc/a.h5"),
        "unwritable demo folder": (
            ["demo", "--quick", "--methods", "fbp", "--out", "/proc/ctblend_demo"],
            "--out /proc/ctblend_demo",
        ),
        "missing demo volume": (
            ["demo", "--volume", tmp_path / "gone.h5", "--out", "a.h5"],
            "gone.h5: no such file",
        ),
    }


def _check_error(name: str, code: int, err: str, expected: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (name, err)
    assert len(lines) == 1 and lines[0].startswith("ctblend"), (name, err)
    assert "error:" in lines[0] and expected in lines[0], (name, err)


def test_user_errors_exit_2_with_one_line_and_no_output(work, tmp_path, monkeypatch):
    """The first three as subprocesses (in parallel); the others through main() in-process."""
    cases = _error_cases(work, tmp_path)
    names = list(cases)
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "ctblend", *map(str, cases[name][0])],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names[:3]
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        _check_error(name, proc.returncode, err, cases[name][1])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CI", "true")
    for name in names[3:]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in cases[name][0]])
            except SystemExit as exc:  # argparse errors
                code = exc.code
        _check_error(name, code, err.getvalue(), cases[name][1])
    assert files_in(tmp_path) == {
        "model.pt",
        "nodet.yaml",
        "bad.yaml",
        "notes.h5",
        "cut.h5",
        "volume.h5",
        "plain.npy",
        "inf.npz",
        "cone1020.yaml",
        "inside.yaml",
        "fan16.yaml",
    }


def test_path_errors_come_before_heavy_imports(tmp_path):
    """A missing input or an unwritable output is reported before torch is imported."""
    script = (
        "import sys\nfrom ctblend.cli import main\n"
        "code = main(sys.argv[1:])\nprint('torch' in sys.modules, code)\n"
    )
    for args in (
        ["recon", "missing.h5", "--method", "diffusionblend++"],
        ["recon", "missing.h5", "--out", "/proc/a.h5"],
        ["demo", "--volume", "missing.h5"],
        ["demo", "--out", "/proc/ctblend_demo"],
        ["simulate", "missing.nii", "--out", "a.h5"],
    ):
        proc = subprocess.run(
            [sys.executable, "-c", script, *args],
            cwd=tmp_path,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.stdout.split() == ["False", "2"], (args, proc.stdout, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "ctblend: error:" in proc.stderr


def test_precision_defaults_to_auto_and_bf16_without_native_support_runs_fp32(
    work, tmp_path, monkeypatch
):
    """The "no native bf16" answer is forced (this machine may have it): an explicit bf16 then
    runs fp32 with one warning line; auto picks fp32 silently."""
    import warnings

    from ctblend.cli import build_parser
    from ctblend.priors import base

    parser = build_parser()
    for command in (["demo"], ["recon", "x.h5"], ["sample"]):
        assert parser.parse_args(command).precision == "auto"
    monkeypatch.setattr(base, "cpu_has_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="no AVX512-BF16/AMX.*running fp32"):
        assert base.precision_options("bf16", "cpu")["precision"] == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert base.precision_options("auto", "cpu") == {
            "precision": "fp32",
            "channels_last": False,
        }
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(
            [
                "recon",
                str(work / "sino.h5"),
                "--method",
                "diffusionblend++",
                "--prior",
                str(work / "prior_blendpp"),
                "--nfe",
                "2",
                "--precision",
                "bf16",
                "--quiet",
                "--out",
                "b.h5",
            ]
        )
    assert code == 0
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctblend: warning: bf16 asked for"), lines
    monkeypatch.setattr(base, "cpu_has_bf16", lambda: True)
    assert base.precision_options("auto", "cpu") == {"precision": "bf16", "channels_last": True}


def test_demo_quick_end_to_end(tmp_path):
    proc = ok(ctblend("demo", "--quick", "--out", "demo", cwd=tmp_path))
    shipped = Path(__file__).resolve().parents[1] / "ctblend" / "weights" / "blendpp_cpu128"
    if not (shipped / "config.json").is_file():
        assert "no shipped prior is installed" in proc.stdout
    rows = {
        line.split("|")[1].strip(): line
        for line in proc.stdout.splitlines()
        if line.startswith("| ") and "PSNR" not in line
    }
    assert {"fbp", "sirt", "tv"} <= set(rows)
    assert files_in(tmp_path / "demo") == {"demo.png", "demo_sinogram.png", "demo.md", "demo.h5"}
    with h5py.File(tmp_path / "demo" / "demo.h5", "r") as f:
        truth, sinogram = f["truth"][...], torch.from_numpy(f["sinogram"][...])
        fbp, sirt = f["recon/fbp"][...], f["recon/sirt"][...]
    assert truth.shape == (9, 128, 128) and sinogram.shape == (9, 8, 256)
    A = ops.Operator(ops.volume((9, 128, 128)), ops.parallel(8, 256))
    np.testing.assert_allclose(fbp, ops.fbp(A, sinogram).numpy(), rtol=1e-5, atol=1e-5)
    psnr = {
        k: peak_signal_noise_ratio(truth, np.clip(v, 0, 1), data_range=1)
        for k, v in (("fbp", fbp), ("sirt", sirt))
    }
    assert psnr["sirt"] > psnr["fbp"] + 3  # iterative beats FBP by far at 8 views
    scores = attrs_of(tmp_path / "demo" / "demo.h5")["scores"]
    assert scores["fbp"]["volume_psnr"] == pytest.approx(psnr["fbp"], rel=1e-4)


def test_demo_with_a_prior_and_sample(work, tmp_path):
    proc = ok(
        ctblend(
            "demo",
            "--quick",
            "--size",
            32,
            "--nfe",
            3,
            "--methods",
            "fbp,diffusionblend++",
            "--prior",
            work / "prior_blendpp",
            "--out",
            "d",
            cwd=tmp_path,
        )
    )
    assert "| diffusionblend++ |" in proc.stdout
    with h5py.File(tmp_path / "d" / "demo.h5", "r") as f:
        assert f["recon/diffusionblend++"].shape == (9, 32, 32)
    assert attrs_of(tmp_path / "d" / "demo.h5")["records"]["diffusionblend++"]["nfe"] == 3
    ok(
        ctblend(
            "sample",
            "--prior",
            work / "prior_blendpp",
            "--n-slices",
            4,
            "--nfe",
            2,
            "--spacing",
            "2.5,1,1",
            "--out",
            "s.h5",
            cwd=tmp_path,
        )
    )
    volume = read_volume(tmp_path / "s.h5")  # readable as a volume (HU), e.g. by simulate
    assert volume.shape == (4, 32, 32) and volume.spacing_mm == (2.5, 1.0, 1.0)
    assert -1024 <= volume.hu.min() and volume.hu.max() <= 3071


def test_train_from_a_manifest_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name, seed in (("a", 0), ("b", 1)):
        hu = (ct_phantom((5, 32, 32), seed=seed) * 4095 - 1024).astype(np.float32)
        write_hdf5(data / f"{name}.h5", hu, spacing_mm=(2.5, 12.5, 12.5))
    (data / "MANIFEST.md").write_text(
        "| name | suggested role |\n|---|---|\n| `a` | train |\n| `b` | test |\n"
    )
    proc = ok(
        ctblend(
            "train",
            "--kind",
            "slice2d",
            "--config",
            "tiny",
            "--data",
            data,
            "batch_size=2",
            "log_every=1",
            "--steps",
            2,
            "--out",
            "run",
            cwd=tmp_path,
        )
    )
    assert "on 1 volume(s)" in proc.stdout  # the test volume is left out
    spec = json.loads(
        (
            tmp_path / "run" / (tmp_path / "run" / "latest").read_text().strip() / "config.json"
        ).read_text()
    )
    assert spec["kind"] == "slice2d" and spec["steps"] == 2 and spec["image_size"] == 32
    assert (tmp_path / "run" / "loss.csv").read_text().count("\n") == 3  # header + 2 steps


def test_info(tmp_path):
    proc = ok(ctblend("info", cwd=tmp_path))
    assert f"torch {torch.__version__}" in proc.stdout
    assert "GPU:" in proc.stdout and "operator backends:" in proc.stdout


def test_geometry_yaml_forms_and_errors(tmp_path):
    """The three ways to give angles, fan distances, and one-line errors naming the file."""
    from ctblend.geometry_config import GeometryConfig, geometry_from_yaml
    from ctblend.io import DataError

    path = tmp_path / "g.yaml"
    path.write_text(
        "type: fan_arc\nangles: {count: 4, start_deg: 10, stop_deg: 50}\n"
        "det_count: 5\nsrc_orig: 100\norig_det: 50\nnoise: true\n"
    )
    geometry, noise = geometry_from_yaml(path)
    assert noise and geometry.angles_deg == (10.0, 20.0, 30.0, 40.0)
    pg = geometry.projection()
    assert isinstance(pg, ops.FanGeometry) and pg.curved and pg.src_orig == 100
    assert pg.angles == pytest.approx(np.radians([10, 20, 30, 40]))
    parallel = GeometryConfig.from_dict({"type": "parallel", "angles": [0, 90], "det_count": 3})
    assert parallel.projection().angles == pytest.approx((0.0, np.pi / 2))
    assert GeometryConfig.from_dict(parallel.to_dict()) == parallel  # explicit form round trip
    assert GeometryConfig.from_dict(
        {"type": "fan_flat", "angles": 4, "det_count": 3, "src_orig": 9, "orig_det": 1}
    ).angles_deg == (0, 90, 180, 270)
    bad = {
        "type: helix\nangles: 4\ndet_count: 3\n": "type is 'helix'",
        "type: parallel\nangles: 4\ndet_count: 3\nsrc_orig: 5\n": "'src_orig' is given",
        "type: parallel\nangles: 4\ndet_count: 0\n": "det_count is 0",
        "type: parallel\nangles: 4\ndet_count: 3\ndetectors: 3\n": "unknown geometry keys",
        "type: fan_flat\nangles: 4\ndet_count: 3\nsrc_orig: 5\n": "'orig_det' is missing",
        "type: parallel\nangles: [\n": "invalid YAML",
    }
    for text, expected in bad.items():
        path.write_text(text)
        with pytest.raises(DataError, match=expected) as info:
            geometry_from_yaml(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_recon_help_and_progress_of_iterative_methods(work, tmp_path, monkeypatch):
    """recon's help does not promise a default protocol it does not apply; SIRT and TV show a
    progress bar of their iterations like the diffusion methods."""
    from ctblend.cli import build_parser

    recon_help = build_parser()._subparsers._group_actions[0].choices["recon"].format_help()  # noqa: SLF001
    protocol_help = " ".join(recon_help.split("--protocol PROTOCOL")[-1].split())
    assert protocol_help.startswith("svct4, svct6, svct8, lact90, … (+noise); needed for a volume")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CI", raising=False)
    for method in ("sirt", "tv"):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["recon", str(work / "sino.h5"), "--method", method, "iterations=3"])
        assert code == 0
        assert re.search(rf"sino.h5 {method}: .*\d/3 ", err.getvalue()), err.getvalue()


def test_a_bad_entry_of_a_batch_fails_alone(tmp_path, monkeypatch):
    vols = tmp_path / "vols"
    vols.mkdir()
    hu = (ct_phantom((3, 32, 32), seed=0) * 4095 - 1024).astype(np.float32)
    write_hdf5(vols / "good.h5", hu, spacing_mm=(2.5, 12.5, 12.5))
    (vols / "bad.h5").write_text("a text file, renamed\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CI", "true")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["recon", "--inputs", "vols", "--protocol", "svct8", "--scale", "32"])
    assert code == 2
    assert files_in(tmp_path / "vols_fbp") == {"good_fbp.h5", "good_fbp.png"}
    lines = err.getvalue().strip().splitlines()
    assert "bad.h5: not an HDF5 file" in lines[0] and "1 of 2 inputs failed" in lines[-1]


def test_a_plain_npy_volume_with_spacing(tmp_path):
    """``--spacing DZ,DY,DX`` gives a ``.npy`` its voxel size; the file records it."""
    hu = (ct_phantom((4, 32, 32), seed=3) * 4095 - 1024).astype(np.float32)
    np.save(tmp_path / "x.npy", hu)
    args = ["recon", "x.npy", "--spacing", "3,1.5,1.5", "--protocol", "svct8", "--scale", 32]
    ok(ctblend(*args, "--out", "x.h5", cwd=tmp_path))
    assert attrs_of(tmp_path / "x.h5")["spacing_mm"].tolist() == [3.0, 1.5, 1.5]


def test_fbp_unet_picks_the_shipped_network_of_the_protocol(tmp_path):
    """As the demo does: svct8 → fbpunet_cpu128_svct8; a protocol without one is one line."""
    args = ["recon", "phantom", "--phantom-slices", 3, "--method", "fbp-unet"]
    ok(ctblend(*args, "--protocol", "svct8", "--out", "u.h5", cwd=tmp_path))
    assert attrs_of(tmp_path / "u.h5")["prior"].endswith("fbpunet_cpu128_svct8")
    proc = ctblend(*args, "--protocol", "svct5", "--out", "v.h5", cwd=tmp_path)
    assert proc.returncode == 2 and "no FBP-UNet is shipped for svct5 at 128²" in proc.stderr
    assert files_in(tmp_path) == {"u.h5", "u.png"}


def test_batch_errors_name_the_entry_once_and_a_broken_dcm_is_broken(tmp_path, dicom_dir):
    vols = tmp_path / "vols"
    vols.mkdir()
    (vols / "bad.h5").write_text("a text file, renamed\n")
    (vols / "x.npy").write_bytes(np.zeros((2, 8, 8), np.int16).tobytes())  # no header
    proc = ctblend("recon", "--inputs", "vols", "--protocol", "svct8", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 3, proc.stderr
    for line, name in zip(lines, ("bad.h5", "x.npy"), strict=False):
        assert line.count(f"vols/{name}") == 1, line
    data = (dicom_dir / "0001.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:60000])
    (tmp_path / "one.dcm").write_bytes(data)
    for name, expected in (
        ("cut.dcm", "a broken DICOM file (truncated file"),
        ("one.dcm", "a single DICOM file"),
    ):
        proc = ctblend("recon", name, "--protocol", "svct8", cwd=tmp_path)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr


def test_info_lists_every_operator_backend(tmp_path):
    from operators.backends import BACKENDS

    proc = ok(ctblend("info", cwd=tmp_path))
    line = next(x for x in proc.stdout.splitlines() if x.startswith("operator backends:"))
    assert [b for b in BACKENDS if b != "auto" and f"{b} (" not in line] == []
