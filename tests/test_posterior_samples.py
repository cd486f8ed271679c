"""K posterior samples: seeds, independence under batching, std where the data do not decide."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL_UNET
from scipy.stats import spearmanr

import operators as ops
from ctblend.data import ct_phantom
from ctblend.diffusion import VPSchedule
from ctblend.metrics import body_mask, uncertainty_scores
from ctblend.models import UNet, UNetConfig
from ctblend.pipeline import reconstruct
from ctblend.priors import BlendPPPrior, Slice2DPrior
from ctblend.priors.base import InferenceOptions
from ctblend.sampling import CGConsistency, posterior_samples

pytestmark = pytest.mark.usefixtures("one_thread")
SCHEDULE = VPSchedule()


def _unet_prior(kind: str, size: int = 16):
    """A real (randomly initialised, shrunk) UNet prior: sampling noise it does not remove."""
    torch.manual_seed(5)
    net = UNet(UNetConfig(**SMALL_UNET).for_kind(kind))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    cls = BlendPPPrior if kind == "blend++" else Slice2DPrior
    return cls(net, size, SCHEDULE, options=InferenceOptions(group_batch=3))


class Shrink:
    """ε = 0.5 x_t: a prior with no knowledge, so samples differ where the data leave room."""

    kind, schedule = "slice2d", SCHEDULE

    def __init__(self, image_size: int = 16):
        self.image_size = image_size

    def eps(self, x_t, t, step, generator=None):
        return 0.5 * x_t


def _case(angles, z: int = 9, n: int = 16):
    truth = torch.from_numpy(ct_phantom((z, n, n), seed=1)).float()
    A = ops.Operator(ops.volume((z, n, n)), ops.parallel(list(angles), 2 * n))
    return truth, A, A(truth)


SPARSE = np.linspace(0, np.pi, 4, endpoint=False)


def test_identical_seeds_give_identical_samples_and_zero_std():
    truth, A, y = _case(SPARSE)
    prior = _unet_prior("blend++")
    xs, _ = posterior_samples(prior, A, y, CGConsistency(), seeds=(7, 7, 7), nfe=4)
    assert torch.equal(xs[0], xs[1]) and torch.equal(xs[0], xs[2])
    assert float(xs.std(dim=0).abs().max()) == 0.0
    a, rec_a = reconstruct("diffusionblend++", y, A, prior, nfe=4, samples=3, seed=2)
    b, rec_b = reconstruct("diffusionblend++", y, A, prior, nfe=4, samples=3, seed=2)
    assert torch.equal(a, b) and torch.equal(rec_a["std"], rec_b["std"])
    assert rec_a["samples"] == 3 and float(rec_a["std"].mean()) > 0  # seeds 2, 3, 4 differ


@pytest.mark.parametrize("method, kind", [("diffusionblend++", "blend++"), ("dds", "slice2d")])
def test_batched_samples_equal_the_same_samples_run_one_by_one(method, kind):
    truth, A, y = _case(SPARSE)
    prior = _unet_prior(kind)
    mean, record = reconstruct(method, y, A, prior, nfe=5, samples=3, seed=4)
    singles = torch.stack([reconstruct(method, y, A, prior, nfe=5, seed=s)[0] for s in (4, 5, 6)])
    torch.testing.assert_close(mean, singles.mean(dim=0), rtol=0, atol=2e-4)
    torch.testing.assert_close(record["std"], singles.std(dim=0), rtol=0, atol=2e-4)
    assert record["std"].shape == mean.shape == truth.shape


def test_std_vanishes_when_the_operator_determines_the_volume():
    """Full view and CG run to convergence: every sample is the least-squares solution."""
    truth, A, y = _case(np.linspace(0, np.pi, 48, endpoint=False), z=3, n=12)
    truth, y = truth.double(), A(truth.double())
    mean, record = reconstruct("dds2d", y, A, Shrink(12), nfe=3, samples=4, cg_iters=200)
    assert float(record["std"].max()) < 1e-6
    assert float((mean - truth).abs().max()) < 1e-4
    # … while sparse views with few CG steps leave the samples apart
    truth, A, y = _case(SPARSE, z=3, n=12)
    _, sparse = reconstruct("dds2d", y, A, Shrink(12), nfe=3, samples=4)
    assert float(sparse["std"].mean()) > 1e-3


def _wedge_ratio(degrees: int, n: int = 32) -> float:
    """Deviation power of 6 samples from their mean in the Fourier directions the views measure
    least over those they measure most (12 sectors of 15°, halves by the power AᵀA passes:
    the measured directions come from the operator, no angle convention is assumed)."""
    truth, A, y = _case(np.deg2rad(np.arange(0, degrees, 3)), z=3, n=n)
    xs, _ = posterior_samples(Shrink(n), A, y, CGConsistency(), seeds=range(6), nfe=6)
    dev_power = torch.fft.fft2((xs - xs.mean(dim=0)).double()).abs().square().mean(dim=(0, 1))
    probe = torch.randn((3, n, n), generator=torch.Generator().manual_seed(0))
    passed = torch.fft.fft2(A.T(A(probe)).double()).abs().square().mean(dim=0)
    ky, kx = torch.meshgrid(torch.fft.fftfreq(n), torch.fft.fftfreq(n), indexing="ij")
    radius = (ky**2 + kx**2).sqrt()
    ring = (radius > 0.05) & (radius < 0.45)
    sector = (torch.remainder(torch.atan2(ky, kx), np.pi) / (np.pi / 12)).long().clamp(max=11)
    per_sector = [ring & (sector == k) for k in range(12)]
    measured = torch.stack([passed[m].mean() for m in per_sector]).argsort()
    dev = torch.stack([dev_power[m].mean() for m in per_sector])
    return float(dev[measured[:6]].mean() / dev[measured[6:]].mean())


def test_limited_angle_std_lies_in_the_missing_wedge():
    """Views over [0°, 90°): the samples differ in the missing wedge (measured: 3.8×); over the
    full [0°, 180°) no direction stands out (1.3×)."""
    assert _wedge_ratio(90) > 2.5
    assert _wedge_ratio(180) < 2.0


def test_uncertainty_scores_against_hand_computed_values():
    truth = np.zeros((4, 12, 12))
    truth[:, 3:9, 3:9] = 0.5  # a box of tissue in air
    recon = truth.copy()
    rng = np.random.default_rng(0)
    err = rng.normal(0, 0.02, truth.shape)
    recon += err
    std = np.full(truth.shape, 0.02)
    std[:, 6:, :] = 0.01  # half the voxels claim less than their error
    mask = body_mask(truth)
    scores = uncertainty_scores(recon, std, truth)
    e = np.abs(np.clip(recon, 0, 1) - truth)[mask]
    assert scores["std_body"] == pytest.approx(std[mask].mean())
    assert scores["within_2std"] == pytest.approx((e <= 2 * std[mask]).mean())
    assert scores["std_error_spearman"] == pytest.approx(spearmanr(std[mask], e).statistic)
    assert 0.0 < scores["within_2std"] < 1.0


def test_recon_writes_the_mean_and_std_of_k_samples(tmp_path, dicom_dir):
    """The issue's command: ``recon <DICOM> --protocol svct8 --slices 0:6 --method
    diffusionblend++ --nfe 6 --samples 3`` writes ``recon`` and ``std`` with ``samples`` = 3."""
    import subprocess
    import sys

    import h5py

    out = tmp_path / "u.h5"
    command = [
        sys.executable, "-m", "ctblend", "recon", str(dicom_dir), "--protocol", "svct8",
        "--slices", "0:6", "--method", "diffusionblend++", "--nfe", "6", "--samples", "3",
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with h5py.File(out) as f:
        recon, std, samples = f["recon"][...], f["std"][...], f.attrs["samples"]
    assert recon.shape == std.shape == (6, 128, 128) and samples == 3
    assert np.isfinite(std).all() and std.min() >= 0 and std.mean() > 0


def test_panels_draw_an_uncertainty_row_per_plane(tmp_path):
    from ctblend.figures import plot_panels

    truth = np.random.default_rng(0).random((6, 16, 16))
    recon = truth + 0.01
    std = np.zeros_like(truth)
    std[:, 8, 8] = 0.3  # one bright voxel column: the std image shows it, the others do not
    fig = plot_panels(
        {"ground truth": truth, "fbp": recon, "dbpp": recon}, tmp_path / "p.png", std={"dbpp": std}
    )
    rows = {row for row, _ in fig.axes}
    assert {"axial std", "coronal std", "sagittal std"} <= rows
    image = fig.axes[("axial std", "dbpp")].get_images()[0].get_array()
    assert image[8, 8] == pytest.approx(0.3) and image[0, 0] == 0
    assert not fig.axes[("axial std", "fbp")].axison  # no samples, no map
    with pytest.raises(ValueError, match="std for \\['other'\\]"):
        plot_panels({"a": truth}, tmp_path / "q.png", std={"other": std})
