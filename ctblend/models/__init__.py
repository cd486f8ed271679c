"""Networks: the ADM-style UNet with timestep and slice-gap conditioning."""

from __future__ import annotations

from ctblend.models.unet import KIND_CHANNELS, UNet, UNetConfig, count_parameters

__all__ = ["KIND_CHANNELS", "UNet", "UNetConfig", "count_parameters"]
