"""Training of diffusion priors: DSM trainer, EMA, checkpoints (safetensors + JSON), DDP."""

from __future__ import annotations

from ctblend.training.checkpoint import export_weights, find_latest
from ctblend.training.config import PRESETS, Phase, TrainConfig, load_config
from ctblend.training.synthetic import BlobDataset
from ctblend.training.trainer import StepInfo, TrainResult, train

__all__ = [
    "PRESETS",
    "BlobDataset",
    "Phase",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "export_weights",
    "find_latest",
    "load_config",
    "train",
]
