"""The training recipe's parts: validation slab and curve, augmentation, LR schedule, init_from."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ctblend.data.phantom import ct_phantom
from ctblend.diffusion import VPSchedule
from ctblend.io import write_hdf5
from ctblend.models.unet import UNet, UNetConfig
from ctblend.priors import load_prior
from ctblend.training import export_weights, load_config, train
from ctblend.training.augment import augment_batch
from ctblend.training.config import Augment
from ctblend.training.data import training_datasets
from ctblend.training.validation import Validator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("vols")
    files = []
    for seed in (0, 1):
        hu = np.rint(ct_phantom((30, 64, 64), seed=seed) * 4095 - 1024).astype(np.int16)
        files.append(write_hdf5(folder / f"v{seed}.h5", hu, spacing_mm=(2.0, 4.0, 4.0), attrs={}))
    return files


def _tiny(**overrides):
    base = dict(
        image_size=32,
        batch_size=4,
        warmup_steps=2,
        log_every=5,
        checkpoint_every=5,
        phases=[{"steps": 10, "crop": 16}],
        holdout=0.3,
        val_samples=4,
    )
    return load_config("tiny", **{**base, **overrides})


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_validation_of_a_zero_network_is_the_noise_energy() -> None:
    """A network that predicts ε = 0 scores E[ε²] = 1 (up to the sample's spread) at every t."""
    net = UNet(
        UNetConfig(
            in_channels=3,
            out_channels=3,
            base_channels=16,
            channel_mults=(1, 2),
            attention_levels=(),
            head_channels=16,
            norm_groups=8,
        )
    )
    x = torch.rand(6, 3, 32, 32)
    scores = Validator((x, torch.ones(6)), VPSchedule(), (10, 900), "all")(net)
    n = x.numel()
    for value in scores.values():
        assert abs(value - 1.0) < 6 / math.sqrt(n)  # χ² mean of n unit normals: sd √(2/n)


def test_run_writes_a_validation_curve_and_resume_keeps_it_whole(volumes, tmp_path) -> None:
    cfg = _tiny()
    dataset, val = training_datasets(cfg, volumes)
    assert val is not None and val[0].shape == (4, 3, 32, 32)
    train(cfg, dataset, tmp_path, progress=False, validation=val)
    longer = cfg.replace(phases=[{"steps": 15, "crop": 16}])
    train(longer, dataset, tmp_path, progress=False, validation=val)
    rows = _read(tmp_path / "val.csv")
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 15]
    for r in rows:
        per_t = [float(r[f"val_t{t}"]) for t in cfg.val_timesteps]
        assert float(r["val_mean"]) == pytest.approx(sum(per_t) / len(per_t), rel=1e-4)
    assert float(rows[0]["val_mean"]) == pytest.approx(1.0, abs=0.1)  # fresh network: ε = 0
    assert float(rows[-1]["val_mean"]) < float(rows[0]["val_mean"])


def test_init_from_a_prior_of_the_same_kind_starts_from_its_weights(volumes, tmp_path) -> None:
    cfg = _tiny(holdout=0.0)
    dataset, _ = training_datasets(cfg, volumes)
    train(cfg, dataset, tmp_path / "a", progress=False)
    source = tmp_path / "a" / "checkpoints" / "step_00000010"
    cont = cfg.replace(
        init_from=str(source),
        lr=1e-12,
        warmup_steps=0,
        ema_decay=0.0,
        phases=[{"steps": 1, "crop": 16}],
    )
    train(cont, dataset, tmp_path / "b", progress=False)
    before = load_file(str(source / "weights.safetensors"))
    after = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000001" / "weights.safetensors"))
    assert before.keys() == after.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=1e-6)


def test_init_from_another_kind_or_network_is_refused(volumes, tmp_path) -> None:
    cfg = _tiny(holdout=0.0, kind="blend")
    dataset, _ = training_datasets(cfg, volumes)
    train(cfg, dataset, tmp_path / "a", progress=False)
    wrong = _tiny(holdout=0.0, init_from=str(tmp_path / "a"))  # blend++ from a blend prior
    with pytest.raises(Exception, match="cannot start"):
        train(wrong, training_datasets(wrong, volumes)[0], tmp_path / "b", progress=False)


def test_cosine_schedule_reaches_its_floor_and_min_snr_is_validated() -> None:
    from ctblend.training.trainer import _Run  # noqa: PLC0415 (the learning-rate rule)

    cfg = _tiny(lr=1e-3, warmup_steps=2, lr_schedule="cosine", lr_min_ratio=0.1)
    run = _Run.__new__(_Run)
    run.config = cfg
    assert run.lr_at(0) == pytest.approx(5e-4)
    assert run.lr_at(2) == pytest.approx(1e-3)
    assert run.lr_at(cfg.total_steps) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="loss_weighting"):
        _tiny(loss_weighting="snr")
    with pytest.raises(ValueError, match="holdout"):
        _tiny(holdout=0.7)
    with pytest.raises(TypeError):
        _tiny(augment={"rotation": 5})


def test_augmentation_keeps_ct_plausible() -> None:
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(64) - 31.5, torch.arange(64) - 31.5, indexing="ij")
    disk = ((yy**2 + xx**2) < 20**2).float()[None, None].repeat(16, 3, 1, 1)
    rotated = augment_batch(disk, Augment(rotate_deg=180, prob=1.0), gen)
    # a centred disk is rotation invariant: only its rim is resampled
    assert (rotated - disk).abs().mean() < 0.01
    ones = torch.ones(4, 1, 64, 64)
    out = augment_batch(ones, Augment(rotate_deg=45, scale=0.0, prob=1.0), gen)
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    corners = out[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners < 0.5).float().mean() > 0.5  # rotated corners fall outside: air
    ramp = torch.arange(3.0).view(1, 3, 1, 1).expand(64, 3, 8, 8)
    flipped = augment_batch(ramp, Augment(z_reverse=True, prob=0.0), gen)
    same = (flipped == ramp).flatten(1).all(1)
    reversed_ = (flipped == ramp.flip(1)).flatten(1).all(1)
    assert (same | reversed_).all() and 10 < int(reversed_.sum()) < 54
    assert torch.equal(augment_batch(ramp, Augment(), gen), ramp)  # defaults: no change


def test_time_budget_stops_with_a_checkpoint_and_a_second_call_continues(volumes, tmp_path):
    cfg = _tiny(
        holdout=0.0,
        phases=[{"steps": 10**6, "crop": 16}],
        log_every=2,
        checkpoint_every=10**6,
        time_budget_s=1e-3,
    )
    dataset, _ = training_datasets(cfg, volumes)
    first = train(cfg, dataset, tmp_path, progress=False)
    assert first.steps == 2 and first.checkpoint.name == "step_00000002"
    second = train(cfg, dataset, tmp_path, progress=False)
    assert second.steps == 4


def test_gpu_recipe_runs_end_to_end_in_tiny_mode(ct_dir, tmp_path):
    """benchmarks/gpu_priors.py on the CPU at 32² (the GPU run is the same code path)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_priors.py"
    out = tmp_path / "out"
    subprocess.run(
        [
            sys.executable,
            str(script),
            "--data",
            str(ct_dir),
            "--out",
            str(out),
            "--tiny",
            "--transfer",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8 and "gpu_priors.json" in files
    for name, kind in (("slice2d_gpu128", "slice2d"), ("blendpp_gpu128", "blend++")):
        assert load_prior(out / name).kind == kind
        assert (out / f"{name}_val.csv").read_text().startswith("step,")


def test_bf16_training_on_a_cpu_without_native_bf16_runs_in_fp32(monkeypatch, caplog) -> None:
    from ctblend.priors import base
    from ctblend.training import trainer

    monkeypatch.setattr(base, "cpu_has_bf16", lambda: False)  # force the hardware answer
    with caplog.at_level("WARNING"):
        assert trainer._amp_dtype("bf16", torch.device("cpu")) is None
    assert "no native bf16" in caplog.text
    monkeypatch.setattr(base, "cpu_has_bf16", lambda: True)
    assert trainer._amp_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert trainer._amp_dtype("auto", torch.device("cpu")) is None


def test_export_into_a_shipped_folder_keeps_its_card_and_gives_usual_modes(volumes, tmp_path):
    cfg = _tiny(holdout=0.0)
    train(cfg, training_datasets(cfg, volumes)[0], tmp_path / "run", progress=False)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "MODEL_CARD.md").write_text("card")
    (shipped / "weights.safetensors").write_text("old weights")
    old_umask = os.umask(0o022)
    try:
        export_weights(tmp_path / "run", shipped)
    finally:
        os.umask(old_umask)
    assert (shipped / "MODEL_CARD.md").read_text() == "card"
    assert load_prior(shipped).kind == cfg.kind  # the new weights replaced the old file
    assert shipped.stat().st_mode & 0o777 == 0o755
    for name in ("weights.safetensors", "config.json", "MODEL_CARD.md"):
        assert (shipped / name).stat().st_mode & 0o777 == 0o644, name


def test_start_step_continues_an_exported_run_where_it_stopped(volumes, tmp_path) -> None:
    """A run exported at step 6 (fp16 EMA weights) goes on at step 6 of the same phases and
    cosine schedule in a new folder: its loss rows, LR and checkpoint steps follow on."""
    cfg = _tiny(holdout=0.0, lr_schedule="cosine", phases=[{"steps": 12, "crop": 16}])
    dataset, _ = training_datasets(cfg, volumes)
    train(cfg.replace(phases=[{"steps": 6, "crop": 16}]), dataset, tmp_path / "a", progress=False)
    export_weights(tmp_path / "a", tmp_path / "export", dtype="float16")
    cont = cfg.replace(init_from=str(tmp_path / "export"), start_step=6)
    result = train(cont, dataset, tmp_path / "b", progress=False)
    assert result.steps == 12
    rows = _read(tmp_path / "b" / "loss.csv")
    assert [int(r["step"]) for r in rows] == [10, 12]  # logged every 5 steps from step 6 on
    # the LR of step 9 on the cosine of all 12 steps: lr·(0.1 + 0.9·½(1 + cos(π (9 − 2)/10)))
    expected = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (9 - 2) / 10)))
    assert float(rows[0]["lr"]) == pytest.approx(expected, rel=2e-3)  # loss.csv keeps 3 digits
    # the fresh AdamW moments warm up again over warmup_steps (2) from the first step (6)
    from ctblend.training.trainer import _Run

    run = _Run.__new__(_Run)
    run.config = cont
    cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (6 - 2) / 10))
    assert run.lr_at(6) == pytest.approx(cfg.lr * 0.5 * cosine)
    with pytest.raises(ValueError, match=r"start_step=12; expected an integer in \[0, 12\)"):
        cont.replace(start_step=12)
    with pytest.raises(ValueError, match="needs init_from"):
        cfg.replace(start_step=3)
