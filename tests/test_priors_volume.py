"""Volume priors: ε routing per slice, batching, precision, checkpoint loading, sampling."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest
import torch
from conftest import SMALL_UNET
from torch import nn

from ctblend.diffusion import VPSchedule
from ctblend.models import UNet, UNetConfig
from ctblend.priors import (
    BlendPPPrior,
    BlendPrior,
    CheckpointError,
    PartitionPolicy,
    PriorSpec,
    Slice2DPrior,
    VolumePrior,
    load_prior,
    sample_patch,
    sample_unconditional,
    save_prior,
)
from ctblend.training.checkpoint import export_weights

pytestmark = pytest.mark.usefixtures("one_thread")


class ChannelEcho(nn.Module):
    """ε = input channels (in order) + 1000 · gap label: shows which channel reached which slice."""

    def __init__(self, out_channels: int = 3):
        super().__init__()
        self.out_channels = out_channels
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, gap):
        out = x if self.out_channels == x.shape[1] else x[:, 1:2] + 10 * x[:, :1] + 100 * x[:, 2:]
        return out + 1000.0 * gap.view(-1, 1, 1, 1)


class PointMassOracle(nn.Module):
    """The exact ε for data that is the constant c: ε = (x_t − √ᾱ_t c) / √(1 − ᾱ_t)."""

    def __init__(self, c: float, out_channels: int):
        super().__init__()
        self.c, self.out_channels = c, out_channels
        self.register_buffer("alphas", VPSchedule().alphas_cumprod.float())

    def forward(self, x, t, gap):
        a = self.alphas[t].view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * self.c) / (1 - a).sqrt()
        return eps if self.out_channels == x.shape[1] else eps[:, 1:2]


def _slice_index_volume(z: int, size: int = 8) -> torch.Tensor:
    return torch.arange(z, dtype=torch.float32).view(z, 1, 1).expand(z, size, size).clone()


def _randomised_unet(kind: str) -> UNet:
    torch.manual_seed(3)
    net = UNet(UNetConfig(**SMALL_UNET).for_kind(kind))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    return net


@pytest.mark.parametrize("z", [3, 4, 10, 17, 19])
def test_blendpp_every_slice_gets_its_own_channel_and_the_right_label(z):
    prior = BlendPPPrior(ChannelEcho(), 8, options=None)
    x = _slice_index_volume(z)
    gen = torch.Generator().manual_seed(0)
    for step in range(6):
        eps = prior.eps(x, t=500, step=step, generator=gen)
        label = 3 if step % 2 == 0 and z >= 9 else 1  # default: cross on steps 0, 2, 4 …
        torch.testing.assert_close(eps, x + 1000.0 * label, rtol=0, atol=0)


def test_blendpp_group_batch_does_not_change_the_result():
    net = _randomised_unet("blend++")
    x = torch.randn(13, 8, 8)
    outs = []
    for gb in (1, 4, 64):
        prior = BlendPPPrior(
            net, 8, policy=PartitionPolicy("fixed", 2), options=_opts(group_batch=gb)
        )
        outs.append(prior.eps(x, 250, step=1))
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], rtol=1e-5, atol=1e-5)


def test_blend_uses_edge_padded_neighbour_windows():
    prior = BlendPrior(ChannelEcho(out_channels=1), 8)
    z = 5
    x = _slice_index_volume(z)
    eps = prior.eps(x, t=10, step=0)
    for i in range(z):
        lo, hi = max(i - 1, 0), min(i + 1, z - 1)
        assert torch.all(eps[i] == i + 10 * lo + 100 * hi + 1000 * 1)


def test_slice2d_is_slicewise_with_label_zero():
    prior = Slice2DPrior(ChannelEcho(out_channels=1), 8, options=_opts(group_batch=2))
    x = torch.randn(5, 8, 8)
    torch.testing.assert_close(prior.eps(x, 10, 0), x)


def test_precision_and_channels_last_options_stay_close_to_fp32():
    net = _randomised_unet("blend++")
    x = torch.randn(6, 8, 8)
    policy = PartitionPolicy("fixed", 0)
    ref = BlendPPPrior(net, 8, policy=policy).eps(x, 300, 0)
    cl = BlendPPPrior(net, 8, policy=policy, options=_opts(channels_last=True)).eps(x, 300, 0)
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-4)
    bf = BlendPPPrior(net, 8, policy=policy, options=_opts(precision="bf16")).eps(x, 300, 0)
    assert bf.dtype == torch.float32
    assert (bf - ref).norm() / ref.norm() < 0.05


def test_eps_input_validation():
    prior = BlendPPPrior(ChannelEcho(), 8)
    with pytest.raises(ValueError, match=r"\(Z, H, W\)"):
        prior.eps(torch.zeros(8, 8), 0, 0)
    with pytest.raises(ValueError, match="trained at 8"):
        prior.eps(torch.zeros(4, 16, 16), 0, 0)
    with pytest.raises(ValueError, match="at least 3 slices"):
        prior.eps(torch.zeros(2, 8, 8), 0, 0)


def _opts(**kw):
    from ctblend.priors import InferenceOptions

    return InferenceOptions(**kw)


# --- checkpoints ------------------------------------------------------------------------


def _save(tmp_path, kind="blend++", name="prior", size=16):
    net = _randomised_unet(kind)
    spec = PriorSpec(kind=kind, image_size=size, unet=net.config, command="test")
    return save_prior(tmp_path / name, spec, net.state_dict()), net


@pytest.mark.parametrize(
    "kind, cls", [("blend++", BlendPPPrior), ("blend", BlendPrior), ("slice2d", Slice2DPrior)]
)
def test_load_prior_round_trip(tmp_path, kind, cls):
    folder, net = _save(tmp_path, kind)
    prior = load_prior(folder, kind=kind, image_size=16, group_batch=3, precision="fp32")
    assert isinstance(prior, cls) and isinstance(prior, VolumePrior)
    assert prior.kind == kind and prior.image_size == 16
    x = torch.randn(5, 16, 16)
    direct = {"blend++": BlendPPPrior, "blend": BlendPrior, "slice2d": Slice2DPrior}[kind]
    policy = {"policy": PartitionPolicy("fixed", 0)} if kind == "blend++" else {}
    expected = direct(net, 16, **policy).eps(x, 100, 0)
    if kind == "blend++":
        prior = load_prior(folder, policy=PartitionPolicy("fixed", 0), precision="fp32")
    torch.testing.assert_close(prior.eps(x, 100, 0), expected)


def test_load_prior_kind_and_size_mismatch(tmp_path):
    folder, _ = _save(tmp_path)
    with pytest.raises(CheckpointError, match="holds a 'blend\\+\\+' prior, but a 'slice2d'"):
        load_prior(folder, kind="slice2d")
    with pytest.raises(CheckpointError, match="trained at 16×16, but 32×32"):
        load_prior(folder, image_size=32)


def test_load_prior_weights_not_matching_config(tmp_path):
    folder, _ = _save(tmp_path)
    other, _ = _save(tmp_path, name="bigger")
    cfg = (other / "config.json").read_text().replace('"base_channels": 8', '"base_channels": 16')
    (folder / "config.json").write_text(cfg)
    with pytest.raises(CheckpointError, match="do not match the UNet in config.json"):
        load_prior(folder)


def test_pickle_files_are_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="pickle files .* are never loaded"):
        load_prior(bad)
    # A pickle disguised as safetensors is rejected by the safetensors parser.
    folder, _ = _save(tmp_path)
    (folder / "weights.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_prior(folder)
    assert not marker.exists()


def test_load_prior_missing_and_malformed(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_prior(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="lacks weights.safetensors, config.json"):
        load_prior(tmp_path / "empty")
    folder, _ = _save(tmp_path)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid JSON"):
        load_prior(folder)


def test_fp16_export_loads_close_to_fp32(tmp_path):
    folder, net = _save(tmp_path)
    export_weights(folder, tmp_path / "shipped", dtype="float16")
    from safetensors.torch import load_file

    assert all(
        v.dtype == torch.float16
        for v in load_file(tmp_path / "shipped" / "weights.safetensors").values()
    )
    x = torch.randn(3, 16, 16)
    policy = PartitionPolicy("fixed", 0)
    ref = load_prior(folder, policy=policy).eps(x, 50, 0)
    half = load_prior(tmp_path / "shipped", policy=policy).eps(x, 50, 0)
    assert (half - ref).norm() / ref.norm() < 1e-2


# --- unconditional sampling -------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 0.85])
def test_sampling_with_exact_eps_recovers_a_point_mass(eta):
    c = 0.4  # network space; [0, 1] value (c + 1) / 2 = 0.7
    for prior in (
        BlendPPPrior(PointMassOracle(c, 3), 8),
        BlendPrior(PointMassOracle(c, 1), 8),
        Slice2DPrior(PointMassOracle(c, 1), 8),
    ):
        vol = sample_unconditional(prior, (7, 8, 8), nfe=10, eta=eta, seed=1)
        torch.testing.assert_close(vol, torch.full((7, 8, 8), 0.7), rtol=0, atol=1e-4)
    patch = sample_patch(BlendPPPrior(PointMassOracle(c, 3), 8), num=2, label=3, nfe=5, eta=eta)
    torch.testing.assert_close(patch, torch.full((2, 3, 8, 8), 0.7), rtol=0, atol=1e-4)


def test_sampling_is_seeded():
    prior = BlendPPPrior(_randomised_unet("blend++"), 8)
    a = sample_unconditional(prior, (4, 8, 8), nfe=4, eta=0.5, seed=7)
    b = sample_unconditional(prior, (4, 8, 8), nfe=4, eta=0.5, seed=7)
    c = sample_unconditional(prior, (4, 8, 8), nfe=4, eta=0.5, seed=8)
    assert a.shape == (4, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    with pytest.raises(ValueError, match="blend\\+\\+ prior"):
        sample_patch(Slice2DPrior(_randomised_unet("slice2d"), 8))


def test_precision_options_follow_the_hardware():
    """auto → bf16 exactly when the CPU has native bf16 (read here from /proc/cpuinfo's flags);
    channels-last only with bf16 on a CPU; an explicit bf16 without native support runs fp32
    with one warning (it failed on CPUs without AVX-512, which this test had not run on)."""
    from ctblend.priors.base import precision_options

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU flags from (not Linux)")
    flags = {
        f
        for line in cpuinfo.read_text().splitlines()
        if line.startswith("flags")
        for f in line.split(":", 1)[1].split()
    }
    native_bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    expected = {"precision": "bf16" if native_bf16 else "fp32", "channels_last": native_bf16}
    assert precision_options("fp32") == {"precision": "fp32", "channels_last": False}
    assert precision_options("auto", "cpu") == expected
    with warnings.catch_warnings(record=True) as caught:  # explicit bf16: fp32 + a warning
        warnings.simplefilter("always")
        assert precision_options("bf16") == expected
    assert len(caught) == (0 if native_bf16 else 1)
