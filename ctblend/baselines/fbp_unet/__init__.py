"""FBP-UNet: a UNet that maps an FBP slice to the true slice, one network per protocol.

The network predicts the residual: ``x = x_fbp + UNet(2 x_fbp − 1)`` on ``(B, 1, H, W)`` slices in
protocol units [0, 1] (the UNet of :mod:`ctblend.models.unet` with one channel in and out, a
constant timestep 0 and no slice-gap embedding; its zero-initialised last layer makes a fresh
network the identity, i.e. plain FBP). Training: (FBP, truth) pairs from
:class:`~ctblend.data.FBPPairDataset` for the protocol's operator, random crops with left-right
flips, then whole slices; L2 (or L1) loss, AdamW with warm-up and cosine decay, gradient clipping.

A run folder (resumable)::

    out_dir/latest                      "checkpoints/step_00000500"
    out_dir/checkpoints/step_00000500/  weights.safetensors, config.json, train.yaml,
                                        state/optimizer.*, state/trainer.json, state/rng_rank0.*
    out_dir/loss.csv, out_dir/loss.png

A network folder is ``weights.safetensors`` + ``config.json`` (``kind: "fbp-unet"``, protocol,
UNet config, image size, steps, command, …); no pickle anywhere. ``FBPUNet.load`` accepts a
network folder or a run folder.

Modules: ``config`` (settings, network record), ``model`` (network, load/save/export), ``train``
and ``cli``.
"""

from ctblend.baselines.fbp_unet.cli import add_arguments, run
from ctblend.baselines.fbp_unet.config import (
    DEFAULT_UNET,
    KIND,
    FBPUNetSpec,
    FBPUNetTrainConfig,
    read_fbp_unet_spec,
)
from ctblend.baselines.fbp_unet.model import FBPUNet, ResidualUNet, export_fbp_unet, save_fbp_unet
from ctblend.baselines.fbp_unet.train import TrainSummary, train_fbp_unet

__all__ = [
    "DEFAULT_UNET",
    "KIND",
    "FBPUNet",
    "FBPUNetSpec",
    "FBPUNetTrainConfig",
    "ResidualUNet",
    "TrainSummary",
    "read_fbp_unet_spec",
    "add_arguments",
    "export_fbp_unet",
    "run",
    "save_fbp_unet",
    "train_fbp_unet",
]
