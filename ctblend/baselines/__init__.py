"""Learned baselines: FBP-UNet (one post-processing UNet per protocol)."""

from __future__ import annotations

from ctblend.baselines.fbp_unet import (
    FBPUNet,
    FBPUNetSpec,
    FBPUNetTrainConfig,
    export_fbp_unet,
    save_fbp_unet,
    train_fbp_unet,
)

__all__ = [
    "FBPUNet",
    "FBPUNetSpec",
    "FBPUNetTrainConfig",
    "export_fbp_unet",
    "save_fbp_unet",
    "train_fbp_unet",
]
