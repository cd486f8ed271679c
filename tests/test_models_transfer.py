"""Transfer from a 2D prior: the widened network reproduces the 2D network it came from."""

from __future__ import annotations

import pytest
import torch

from ctblend.models.transfer import widen_from_2d
from ctblend.models.unet import UNet, UNetConfig

SMALL = dict(
    base_channels=16,
    channel_mults=(1, 2),
    attention_levels=(1,),
    head_channels=16,
    norm_groups=8,
    num_res_blocks=1,
)


def trained_like_2d(seed: int = 0) -> UNet:
    """A 2D UNet with every parameter random (a fresh UNet outputs 0: its last layers are zero)."""
    net = UNet(UNetConfig(in_channels=1, out_channels=1, **SMALL)).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.2)
    return net.eval()


@pytest.mark.parametrize("gap", [1, 3])
def test_blend_returns_the_2d_eps_of_the_middle_slice(gap: int) -> None:
    net2d = trained_like_2d()
    net = widen_from_2d(net2d, "blend").double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)  # three *different* slices
    t = torch.tensor([10, 700])
    with torch.no_grad():
        ref = net2d(x[:, 1:2], t, torch.zeros(2))
        out = net(x, t, torch.full((2,), gap))
    assert ref.abs().max() > 0.1  # the reference is not trivially zero
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gap", [1, 3])
def test_blendpp_on_identical_slices_returns_the_2d_eps_in_every_channel(gap: int) -> None:
    net2d = trained_like_2d(1)
    net = widen_from_2d(net2d, "blend++").double().eval()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    t = torch.tensor([3, 250])
    with torch.no_grad():
        ref = net2d(x, t, torch.zeros(2))
        out = net(x.repeat(1, 3, 1, 1), t, torch.full((2,), gap))
    assert out.shape == (2, 3, 16, 16)
    for c in range(3):
        torch.testing.assert_close(out[:, c : c + 1], ref, rtol=1e-5, atol=1e-5)


def test_gap_labels_separate_after_a_gradient_step() -> None:
    net = widen_from_2d(trained_like_2d(2), "blend++").double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    t, gaps = torch.tensor([5, 5, 5, 5]), torch.tensor([1, 3, 1, 3])
    net(x, t, gaps).square().mean().backward()
    assert net.gap_embed.mlp[2].weight.grad.abs().max() > 0
    with torch.no_grad():
        net.gap_embed.mlp[2].weight.sub_(net.gap_embed.mlp[2].weight.grad)
        e = net.gap_embed(torch.tensor([1.0, 3.0]))
    assert not torch.allclose(e[0], e[1])


def test_bad_sources_are_refused() -> None:
    with pytest.raises(ValueError, match="'blend\\+\\+' or 'blend'"):
        widen_from_2d(trained_like_2d(), "slice2d")
    three = UNet(UNetConfig(in_channels=3, out_channels=3, **SMALL))
    with pytest.raises(ValueError, match="channels \\(1, 1\\)"):
        widen_from_2d(three, "blend++")
