"""FBP-UNet: learns to remove sparse-view streaks, round-trips through disk, refuses misuse."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

import operators as ops
from ctblend.baselines import FBPUNet, FBPUNetTrainConfig, export_fbp_unet, train_fbp_unet
from ctblend.data import ct_phantom, phantom_spacing_mm, unit_to_hu
from ctblend.io import write_hdf5
from ctblend.models.unet import UNetConfig
from ctblend.pipeline import reconstruct
from ctblend.priors.loading import CheckpointError
from ctblend.protocol import get_protocol

SIZE = 64
TINY = UNetConfig(
    in_channels=1,
    out_channels=1,
    base_channels=16,
    channel_mults=(1, 2, 2),
    num_res_blocks=1,
    attention_levels=(),
    head_channels=16,
    norm_groups=8,
    gap_embedding=False,
)
CONFIG = FBPUNetTrainConfig(
    unet=TINY,
    scale=SIZE,
    crop=32,
    crop_fraction=0.7,
    batch_size=8,
    full_batch_size=8,
    lr=2e-3,
    warmup_steps=20,
    checkpoint_every=100,
    log_every=20,
)
STEPS = 200


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny svct8 FBP-UNet trained on 40 phantom slices (seed 0)."""
    root = tmp_path_factory.mktemp("fbp_unet")
    shape = (40, SIZE, SIZE)
    write_hdf5(
        root / "phantom.h5",
        unit_to_hu(ct_phantom(shape, seed=0)),
        spacing_mm=phantom_spacing_mm(shape),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train_fbp_unet("svct8", [root / "phantom.h5"], root / "run", STEPS, CONFIG)
    finally:
        torch.set_num_threads(threads)
    return root, summary


def _held_out(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Truth and 8-view FBP of slices of another phantom (seed 1), never seen in training."""
    truth = torch.from_numpy(ct_phantom((n, SIZE, SIZE), seed=1))
    A = get_protocol("svct8").operator(tuple(truth.shape))
    return truth, ops.fbp(A, A(truth))


def test_refine_beats_fbp_on_held_out_slices(trained):
    root, summary = trained
    assert summary.steps == STEPS
    net = FBPUNet.load(root / "run", protocol="svct8", image_size=SIZE)
    truth, x_fbp = _held_out()
    refined = net.refine(x_fbp)
    assert refined.shape == x_fbp.shape and refined.dtype == x_fbp.dtype
    t = truth.numpy().astype(np.float64)
    psnr_fbp = peak_signal_noise_ratio(t, x_fbp.clamp(0, 1).double().numpy(), data_range=1.0)
    psnr_net = peak_signal_noise_ratio(t, refined.clamp(0, 1).double().numpy(), data_range=1.0)
    assert psnr_net > psnr_fbp + 3.0, (psnr_fbp, psnr_net)


def test_fresh_network_is_the_identity():
    """Zero-initialised last layer: before training, FBP-UNet returns FBP exactly."""
    from ctblend.baselines.fbp_unet import FBPUNetSpec, ResidualUNet

    spec = FBPUNetSpec(protocol="svct8", image_size=SIZE, unet=TINY)
    net = FBPUNet(ResidualUNet(TINY), spec)
    x = torch.rand(3, SIZE, SIZE)
    assert torch.equal(net.refine(x), x)


def test_save_load_round_trip_and_method(trained, tmp_path):
    root, summary = trained
    config = json.loads((summary.checkpoint / "config.json").read_text())
    assert config["kind"] == "fbp-unet" and config["protocol"] == "svct8"
    assert config["image_size"] == SIZE and config["steps"] == STEPS
    assert config["unet"]["base_channels"] == 16 and config["command"]
    assert not list(summary.checkpoint.rglob("*.pt")) and not list(
        summary.checkpoint.rglob("*.pkl")
    )

    truth, x_fbp = _held_out(4)
    with torch.inference_mode():
        expected = summary.model(x_fbp[:, None])[:, 0]  # the in-memory network after training
    loaded = FBPUNet.load(summary.checkpoint)
    assert loaded.kind == "fbp-unet" and loaded.protocol == "svct8" and loaded.image_size == SIZE
    torch.testing.assert_close(loaded.refine(x_fbp), expected, rtol=0, atol=1e-6)

    half = export_fbp_unet(summary.checkpoint, tmp_path / "fp16")
    assert sorted(p.name for p in half.iterdir()) == ["config.json", "weights.safetensors"]
    torch.testing.assert_close(FBPUNet.load(half).refine(x_fbp), expected, rtol=0, atol=5e-3)

    A = get_protocol("svct8").operator(tuple(truth.shape))
    x, record = reconstruct("fbp-unet", A(truth), A, prior=loaded)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)
    assert record["method"] == "fbp-unet"


def test_wrong_protocol_or_size_is_a_clear_error(trained):
    root, _ = trained
    with pytest.raises(CheckpointError, match=r"trained for protocol 'svct8'.*'lact90'"):
        FBPUNet.load(root / "run", protocol="lact90")
    with pytest.raises(CheckpointError, match="trained at 64×64"):
        FBPUNet.load(root / "run", image_size=128)
    net = FBPUNet.load(root / "run")
    with pytest.raises(ValueError, match="64×64"):
        net.refine(torch.zeros(2, 32, 32))


def test_resume_continues_a_finished_run(trained, tmp_path):
    """Raising the step count resumes from the latest checkpoint instead of starting over."""
    root, _ = trained
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    more = train_fbp_unet("svct8", [root / "phantom.h5"], run, STEPS + 20, CONFIG)
    assert more.steps == STEPS + 20
    rows = (run / "loss.csv").read_text().splitlines()
    steps = [int(r.split(",")[0]) for r in rows[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS + 20 and len(steps) == 11
    with pytest.raises(CheckpointError, match="protocol differs"):
        train_fbp_unet("svct4", [root / "phantom.h5"], run, STEPS + 40, CONFIG)


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="unknown protocol"):
        replace(CONFIG, protocol="svct")
    with pytest.raises(ValueError, match="crop 30"):
        replace(CONFIG, crop=30)
    with pytest.raises(ValueError, match="loss"):
        replace(CONFIG, loss="huber")
