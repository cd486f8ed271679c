"""Start a 3-slice network (``blend++`` or ``blend``) from a trained 2D (``slice2d``) UNet.

The widening rule, chosen so that the widened network *is* the 2D network on a volume that is
constant along z:

* every layer of the trunk (down, middle, up blocks and the time embedding) is copied;
* ``conv_in``: the 2D kernel goes on the middle input channel, zeros on the outer two, so the
  network first sees the middle slice exactly as the 2D network did (averaging the three
  slices instead was measured worse: the three channels carry independent noise, so their mean
  is an image at the wrong noise level, validation ε-MSE 0.83 against 0.04 for the middle rule's
  middle channel); the outer kernels get gradients and learn to use the neighbours;
* ``out`` conv: the 2D kernel and bias are repeated on every output channel (3 for ``blend++``,
  1 for ``blend``), so each channel starts as the 2D ε of the middle slice;
* gap embedding: its last linear layer gets zero weights and, as bias, the 2D network's gap
  embedding at label 0 (the only label a 2D prior saw), so every gap label starts from the
  embedding the trunk was trained with; the zero weights still receive gradients, so the
  labels separate during fine-tuning.

Hence, for any gap label, a ``blend`` network returns the 2D network's ε of the middle slice,
and a ``blend++`` network returns it in every output channel (float rounding aside), which
``tests/test_models_transfer.py`` checks against the 2D network itself. (For ``blend++`` the outer
channels thus start as the middle slice's ε: fine-tuning must teach them their own.)
"""

from __future__ import annotations

import torch

from ctblend.models.unet import KIND_CHANNELS, UNet, UNetConfig

__all__ = ["widen_from_2d"]

_WIDENED = {"conv_in.weight", "out.2.weight", "out.2.bias"}


def widen_from_2d(net2d: UNet, kind: str) -> UNet:
    """A ``kind`` ("blend++" or "blend") UNet initialised from the 2D UNet ``net2d`` (1 → 1)."""
    if kind not in ("blend++", "blend"):
        raise ValueError(
            f"transfer from a 2D prior builds a 'blend++' or 'blend' prior, not {kind!r}"
        )
    cfg2d = net2d.config
    if (cfg2d.in_channels, cfg2d.out_channels) != KIND_CHANNELS["slice2d"]:
        raise ValueError(
            f"the source prior must be a 2D prior with (in, out) channels (1, 1), got "
            f"({cfg2d.in_channels}, {cfg2d.out_channels})"
        )
    if not cfg2d.gap_embedding:
        raise ValueError("the source 2D prior has no gap embedding; a 3-slice prior needs one")
    cin, cout = KIND_CHANNELS[kind]
    net = UNet(UNetConfig.from_dict({**cfg2d.to_dict(), "in_channels": cin, "out_channels": cout}))
    src = net2d.state_dict()
    state = {k: v.clone() for k, v in src.items() if k not in _WIDENED}
    state["conv_in.weight"] = torch.zeros_like(src["conv_in.weight"]).repeat(1, cin, 1, 1)
    state["conv_in.weight"][:, cin // 2] = src["conv_in.weight"][:, 0]
    state["out.2.weight"] = src["out.2.weight"].repeat(cout, 1, 1, 1)
    state["out.2.bias"] = src["out.2.bias"].repeat(cout)
    with torch.no_grad():
        label0 = net2d.gap_embed(torch.zeros(1, device=src["conv_in.weight"].device))[0]
    state["gap_embed.mlp.2.weight"] = torch.zeros_like(src["gap_embed.mlp.2.weight"])
    state["gap_embed.mlp.2.bias"] = label0.to(src["gap_embed.mlp.2.bias"].dtype)
    net.load_state_dict(state)
    return net
