"""UNet: shapes per prior kind, ADM zero-initialised output, gap-label conditioning, config."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SMALL_UNET

from ctblend.models import KIND_CHANNELS, UNet, UNetConfig, count_parameters
from ctblend.models.embeddings import sinusoidal_embedding
from ctblend.training import load_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomised(cfg: UNetConfig) -> UNet:
    """A UNet whose zero-initialised layers are given random weights (a 'trained' stand-in)."""
    torch.manual_seed(1)
    net = UNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    return net.eval()


@pytest.mark.parametrize("kind", list(KIND_CHANNELS))
def test_output_shape_per_kind_and_zero_init(kind):
    cfg = UNetConfig(**SMALL_UNET).for_kind(kind)
    net = UNet(cfg)
    x = torch.randn(2, KIND_CHANNELS[kind][0], 16, 24)
    out = net(x, torch.tensor([0, 999]), torch.tensor([1, 3]))
    assert out.shape == (2, KIND_CHANNELS[kind][1], 16, 24)
    # ADM: the last conv is zero-initialised, so a fresh network predicts ε = 0.
    assert torch.count_nonzero(out) == 0


def test_fully_convolutional_sizes():
    net = _randomised(UNetConfig(**SMALL_UNET))
    for h, w in [(8, 8), (32, 16), (64, 64)]:
        assert net(torch.randn(1, 3, h, w), torch.tensor([5]), torch.tensor([1])).shape[-2:] == (
            h,
            w,
        )
    with pytest.raises(ValueError, match="multiples of 2"):
        net(torch.randn(1, 3, 15, 16), torch.tensor([5]), torch.tensor([1]))
    with pytest.raises(ValueError, match="3, H, W"):
        net(torch.randn(1, 1, 16, 16), torch.tensor([5]), torch.tensor([1]))


def test_gap_label_changes_output():
    net = _randomised(UNetConfig(**SMALL_UNET))
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([400, 400])
    with torch.no_grad():
        out1 = net(x, t, torch.tensor([1, 1]))
        out3 = net(x, t, torch.tensor([3, 3]))
        again = net(x, t, torch.tensor([1, 1]))
    assert torch.equal(out1, again)
    rel = (out1 - out3).norm() / out1.norm()
    assert rel > 0.05, f"gap label barely changes the output (relative difference {rel:.3g})"
    # The label enters through its own embedding: gradients reach the gap MLP.
    net.zero_grad()
    net(x, t, torch.tensor([3, 3])).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.gap_embed.parameters())


def test_gap_embedding_off_ignores_label():
    net = _randomised(UNetConfig(**{**SMALL_UNET, "gap_embedding": False}))
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    with torch.no_grad():
        assert torch.equal(net(x, t, torch.tensor([1])), net(x, t, torch.tensor([3])))


def test_timestep_changes_output():
    net = _randomised(UNetConfig(**SMALL_UNET))
    x, g = torch.randn(1, 3, 16, 16), torch.tensor([1])
    with torch.no_grad():
        assert not torch.allclose(net(x, torch.tensor([10]), g), net(x, torch.tensor([900]), g))


def test_sinusoidal_embedding_hand_values():
    emb = sinusoidal_embedding(torch.tensor([0.0, 3.0]), 4)
    # half = 2 frequencies: 1 and 10000^(-1/2) = 0.01
    expected = torch.tensor(
        [[1.0, 1.0, 0.0, 0.0], [math.cos(3.0), math.cos(0.03), math.sin(3.0), math.sin(0.03)]]
    )
    torch.testing.assert_close(emb, expected)


def test_presets_sizes():
    # The issue measured a 3.3 M-parameter UNet (base 32, multipliers 1,2,2,4, attention at the
    # lowest level); cpu128 is that network.
    n = count_parameters(UNet(load_config("cpu128").unet))
    assert 3.2e6 < n < 3.4e6
    assert count_parameters(UNet(load_config("tiny").unet)) < 3e5


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(channel_mults=()), "channel_mults"),
        (dict(attention_levels=(5,)), "attention_levels"),
        (dict(base_channels=12, norm_groups=8), "divisible"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**{**SMALL_UNET, **bad})


def test_config_dict_round_trip_and_unknown_key():
    cfg = UNetConfig(**SMALL_UNET)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown UNet config keys"):
        UNetConfig.from_dict({**cfg.to_dict(), "channels": 3})
    with pytest.raises(ValueError, match="unknown prior kind"):
        cfg.for_kind("blend3d")
