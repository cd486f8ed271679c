"""Trainer: a tiny prior learns a synthetic distribution; run folder contents; kinds; errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from ctblend.diffusion import VPSchedule
from ctblend.priors import BlendPrior, CheckpointError, Slice2DPrior, load_prior
from ctblend.training import BlobDataset, load_config, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**overrides):
    base = dict(image_size=16, batch_size=8, warmup_steps=5, log_every=5, checkpoint_every=50)
    return load_config("tiny", **{**base, **overrides})


def test_tiny_prior_learns_and_denoises_better_than_identity(tmp_path):
    cfg = _tiny(
        phases=[{"steps": 150, "crop": 8}, {"steps": 150}],
        batch_size=16,
        lr=2e-3,
        warmup_steps=20,
        log_every=25,
        checkpoint_every=100,
    )
    result = train(
        cfg, BlobDataset(2048, 16), tmp_path / "run", command="ctblend train test", progress=False
    )
    assert result.steps == 300

    rows = list(csv.DictReader((tmp_path / "run" / "loss.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(25, 301, 25))
    assert [int(r["crop"]) for r in rows] == [8] * 6 + [16] * 6
    first, last = float(rows[0]["loss"]), min(float(r["loss"]) for r in rows[-3:])
    assert last < 0.25 * first, f"loss did not drop clearly: {first:.3f} → {last:.3f}"
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000

    spec = json.loads((result.checkpoint / "config.json").read_text())
    assert spec["kind"] == "blend++" and spec["image_size"] == 16 and spec["steps"] == 300
    assert spec["command"] == "ctblend train test"
    assert spec["schedule"] == {"beta_start": 1e-4, "beta_end": 0.02, "num_timesteps": 1000}
    assert spec["data_scaling"]["hu_min"] == -1024.0 and spec["data_scaling"]["hu_max"] == 3071.0
    assert spec["wall_time_s"] > 0
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["step_00000200", "step_00000300"]  # keep_checkpoints = 2

    # Denoise held-out samples (another seed) with the EMA weights through the prior API.
    prior = load_prior(tmp_path / "run", kind="blend++", image_size=16)
    held = BlobDataset(64, 16, seed=99)
    x0 = torch.stack([held[i][0] for i in range(64)]) * 2 - 1
    labels = torch.tensor([held[i][1] for i in range(64)])
    sched, gen = VPSchedule(), torch.Generator().manual_seed(5)
    for t in (50, 200, 500):
        x_t = sched.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
        eps = torch.empty_like(x0)
        for label in (1, 3):
            eps[labels == label] = prior.eps_groups(x_t[labels == label], t, label)
        x0_hat = sched.tweedie_x0(x_t, eps, t).clamp(-1, 1)
        mse_net = float((x0_hat - x0).square().mean())
        mse_identity = float((x_t - x0).square().mean())
        assert mse_net < 0.5 * mse_identity, f"t={t}: {mse_net:.4f} vs identity {mse_identity:.4f}"


@pytest.mark.parametrize("kind, cls", [("blend", BlendPrior), ("slice2d", Slice2DPrior)])
def test_other_kinds_train_and_load(tmp_path, kind, cls):
    cfg = _tiny(kind=kind, phases=[{"steps": 4, "crop": 8}, {"steps": 2}], checkpoint_every=3)
    result = train(cfg, BlobDataset(64, 16, kind=kind), tmp_path / kind, progress=False)
    assert result.steps == 6 and result.checkpoint.name == "step_00000006"
    prior = load_prior(tmp_path / kind, kind=kind)
    assert isinstance(prior, cls)
    assert prior.eps(torch.zeros(4, 16, 16), 10, 0).shape == (4, 16, 16)


def test_finished_run_returns_and_longer_config_continues(tmp_path):
    cfg = _tiny(phases=[{"steps": 4}], checkpoint_every=2)
    ds = BlobDataset(64, 16)
    train(cfg, ds, tmp_path / "run", progress=False)
    seen = []
    again = train(cfg, ds, tmp_path / "run", progress=False, callbacks=[seen.append])
    assert again.steps == 4 and seen == []
    longer = train(
        cfg.replace(phases=[{"steps": 7}]),
        ds,
        tmp_path / "run",
        progress=False,
        callbacks=[seen.append],
    )
    assert longer.steps == 7 and [s.step for s in seen] == [5, 6, 7]


def test_existing_run_without_resume_is_an_error(tmp_path):
    cfg = _tiny(phases=[{"steps": 2}])
    train(cfg, BlobDataset(32, 16), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="already holds a training run"):
        train(cfg, BlobDataset(32, 16), tmp_path / "run", resume=False, progress=False)
    other = cfg.replace(
        unet={**cfg.unet.to_dict(), "base_channels": 8, "norm_groups": 4, "head_channels": 8}
    )
    with pytest.raises(CheckpointError, match="cannot resume — unet differs"):
        train(other, BlobDataset(32, 16), tmp_path / "run", progress=False)


def test_dataset_that_does_not_fit_the_kind_is_an_error(tmp_path):
    cfg = _tiny(phases=[{"steps": 2}])
    with pytest.raises(ValueError, match=r"needs samples of shape \(3, 16, 16\).*\(1, 16, 16\)"):
        train(cfg, BlobDataset(32, 16, kind="slice2d"), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match=r"\(3, 16, 16\).*\(3, 32, 32\)"):
        train(cfg, BlobDataset(32, 32), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="fewer than one step needs"):
        train(cfg, BlobDataset(4, 16), tmp_path / "c", progress=False)


class EpochRecorder(BlobDataset):
    """BlobDataset that records the epochs it is told about (like ctblend.data's datasets)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def test_epochs_are_permutations_and_reach_the_dataset(tmp_path):
    ds = EpochRecorder(10, 16)
    seen = []
    cfg = _tiny(phases=[{"steps": 3, "crop": 8}, {"steps": 3}], batch_size=4)
    train(cfg, ds, tmp_path / "run", progress=False, callbacks=[seen.append])
    # 10 items, 4 per step: 2 steps per epoch (the remainder of 2 is dropped).
    assert ds.epochs == [0, 1, 2]
    for epoch in range(3):
        items = [i for s in seen[2 * epoch : 2 * epoch + 2] for i in s.indices]
        assert len(set(items)) == 8
    assert [s.indices for s in seen[:2]] != [s.indices for s in seen[2:4]]
