"""ADM-style UNet (guided-diffusion layout) with a timestep and a slice-gap embedding.

GroupNorm everywhere, residual blocks modulated by scale-shift from the conditioning
embedding, multi-head self-attention at chosen levels, strided-conv downsampling,
nearest + conv upsampling, and zero-initialised last layers so that a fresh network
predicts ε = 0. Fully convolutional: any H, W divisible by ``2 ** (len(channel_mults) - 1)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctblend.config_io import from_dict
from ctblend.models.embeddings import ScalarEmbedding

#: (in_channels, out_channels) of the network for each prior kind.
KIND_CHANNELS: dict[str, tuple[int, int]] = {"blend++": (3, 3), "blend": (3, 1), "slice2d": (1, 1)}


@dataclass(frozen=True)
class UNetConfig:
    """Every size knob of the UNet.

    attention_levels: indices into ``channel_mults`` (0 = full resolution) whose residual
    blocks are followed by self-attention; the middle block always has attention (ADM).
    Being levels rather than pixel sizes, they stay meaningful under crop training.
    """

    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (3,)
    head_channels: int = 32
    dropout: float = 0.0
    norm_groups: int = 32
    gap_embedding: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError(f"channel_mults must be positive integers, got {self.channel_mults}")
        for name in ("in_channels", "out_channels", "base_channels", "num_res_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"UNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        bad = [a for a in self.attention_levels if not 0 <= a < len(self.channel_mults)]
        if bad:
            raise ValueError(
                f"attention_levels {bad} out of range for {len(self.channel_mults)} levels"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for ch in {self.base_channels * m for m in self.channel_mults}:
            if ch % self.group_count(ch) or ch % min(self.head_channels, ch):
                raise ValueError(
                    f"{ch} channels are not divisible by norm_groups={self.norm_groups} "
                    f"or head_channels={self.head_channels}"
                )

    def group_count(self, channels: int) -> int:
        """GroupNorm groups for a layer with ``channels`` channels."""
        return min(self.norm_groups, channels)

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** (len(self.channel_mults) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attention_levels"] = list(self.attention_levels)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> UNetConfig:
        return from_dict(cls, data, "UNet config keys")

    def for_kind(self, kind: str) -> UNetConfig:
        """This config with the in/out channels the prior ``kind`` needs."""
        if kind not in KIND_CHANNELS:
            raise ValueError(f"unknown prior kind {kind!r}; expected one of {list(KIND_CHANNELS)}")
        cin, cout = KIND_CHANNELS[kind]
        return UNetConfig.from_dict({**self.to_dict(), "in_channels": cin, "out_channels": cout})


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, scale-shift modulation by the embedding, skip connection."""

    def __init__(self, cin: int, cout: int, emb_dim: int, cfg: UNetConfig):
        super().__init__()
        self.in_layers = nn.Sequential(
            nn.GroupNorm(cfg.group_count(cin), cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * cout))
        self.out_norm = nn.GroupNorm(cfg.group_count(cout), cout)
        self.out_layers = nn.Sequential(
            nn.SiLU(), nn.Dropout(cfg.dropout), _zero(nn.Conv2d(cout, cout, 3, padding=1))
        )
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x: (B, cin, H, W), emb: (B, emb_dim) → (B, cout, H, W)."""
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels, residual, zero-initialised projection."""

    def __init__(self, channels: int, cfg: UNetConfig):
        super().__init__()
        self.heads = channels // min(cfg.head_channels, channels)
        self.norm = nn.GroupNorm(cfg.group_count(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) → (B, C, H, W)."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Stage(nn.Module):
    """A residual block optionally followed by attention."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None):
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    """ε-prediction UNet: ``forward(x (B, Cin, H, W), t (B,), gap (B,)) → (B, Cout, H, W)``.

    ``t`` is the diffusion timestep (0 … T−1); ``gap`` is the slice-gap label (1 for adjacent
    slices, 3 for slices three apart, 0 for single slices). The gap embedding (sinusoidal +
    dense layers, like the timestep's) is added to the time embedding.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        base = cfg.base_channels
        emb_dim = 4 * base
        self.time_embed = ScalarEmbedding(base, emb_dim)
        self.gap_embed = ScalarEmbedding(base, emb_dim) if cfg.gap_embedding else None
        self.conv_in = nn.Conv2d(cfg.in_channels, base, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels = [base]
        ch = base
        n_levels = len(cfg.channel_mults)
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                attn = AttentionBlock(base * mult, cfg) if level in cfg.attention_levels else None
                self.down.append(_Stage(ResBlock(ch, base * mult, emb_dim, cfg), attn))
                ch = base * mult
                skip_channels.append(ch)
            if level < n_levels - 1:
                self.down.append(Downsample(ch))
                skip_channels.append(ch)

        self.mid = nn.ModuleList(
            [
                _Stage(ResBlock(ch, ch, emb_dim, cfg), AttentionBlock(ch, cfg)),
                _Stage(ResBlock(ch, ch, emb_dim, cfg), None),
            ]
        )

        self.up = nn.ModuleList()
        for level in reversed(range(n_levels)):
            mult = cfg.channel_mults[level]
            for i in range(cfg.num_res_blocks + 1):
                cin = ch + skip_channels.pop()
                attn = AttentionBlock(base * mult, cfg) if level in cfg.attention_levels else None
                self.up.append(_Stage(ResBlock(cin, base * mult, emb_dim, cfg), attn))
                ch = base * mult
                if level > 0 and i == cfg.num_res_blocks:
                    self.up.append(Upsample(ch))

        self.out = nn.Sequential(
            nn.GroupNorm(cfg.group_count(ch), ch),
            nn.SiLU(),
            _zero(nn.Conv2d(ch, cfg.out_channels, 3, padding=1)),
        )

    def _check(self, x: Tensor, t: Tensor, gap: Tensor) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"UNet expects x of shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}"
            )
        m = cfg.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"H and W must be multiples of {m}, got {tuple(x.shape[-2:])}")
        if t.shape != (x.shape[0],) or gap.shape != (x.shape[0],):
            raise ValueError(
                f"t and gap must have shape ({x.shape[0]},), got {tuple(t.shape)}, "
                f"{tuple(gap.shape)}"
            )

    def forward(self, x: Tensor, t: Tensor, gap: Tensor) -> Tensor:
        self._check(x, t, gap)
        emb = self.time_embed(t)
        if self.gap_embed is not None:
            emb = emb + self.gap_embed(gap)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb) if isinstance(block, _Stage) else block(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        for block in self.up:
            if isinstance(block, _Stage):
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = block(h)
        return self.out(h)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
