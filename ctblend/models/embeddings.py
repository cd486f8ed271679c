"""Sinusoidal encodings and the dense conditioning blocks built on them (timestep, slice gap)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style encoding of scalars.

    values: (B,) integers or floats; returns (B, dim) float32 with [cos | sin] halves
    (an odd ``dim`` gets one zero column).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half
    )
    args = values.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ScalarEmbedding(nn.Module):
    """Sinusoidal encoding followed by Linear → SiLU → Linear (the ADM timestep block).

    Used twice in the UNet: once for the diffusion timestep and once for the slice-gap
    label, as the DiffusionBlend paper describes ("the same architecture as the timestamp
    embedding module").
    """

    def __init__(self, freq_dim: int, out_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, values: Tensor) -> Tensor:
        """values: (B,) → (B, out_dim)."""
        emb = sinusoidal_embedding(values, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
