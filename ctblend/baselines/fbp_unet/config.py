"""FBP-UNet training settings (YAML) and the network record (``config.json``)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor

from ctblend.config_io import read_yaml_config, strict_fields, write_yaml_config
from ctblend.data.scaling import scale_size
from ctblend.models.unet import UNetConfig
from ctblend.priors.loading import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    resolve_checkpoint,
)
from ctblend.protocol import get_protocol

KIND = "fbp-unet"
FORMAT_VERSION = 1

#: A 0.4 M-parameter UNet (0.8 MB in float16): 4 levels, attention only in the middle block.
DEFAULT_UNET = UNetConfig(
    in_channels=1,
    out_channels=1,
    base_channels=16,
    channel_mults=(1, 2, 2, 2),
    num_res_blocks=1,
    attention_levels=(),
    head_channels=16,
    norm_groups=8,
    gap_embedding=False,
)


@dataclass(frozen=True)
class FBPUNetTrainConfig:
    """Everything an FBP-UNet training run depends on besides the files.

    ``steps`` optimiser steps: the first ``round(crop_fraction · steps)`` on random ``crop`` ×
    ``crop`` windows (batch ``batch_size``), the rest on whole slices (batch
    ``full_batch_size``); ``crop=None`` trains on whole slices only. ``voxel_mm``: in-plane pixel
    size (mm) for the ``+noise`` photon statistics (None: the mean over the training files at
    this scale). ``threads``: torch CPU threads (None: leave torch's setting).
    """

    protocol: str = "svct8"
    steps: int = 2000
    scale: str | int = "cpu128"
    unet: UNetConfig = DEFAULT_UNET
    crop: int | None = 64
    crop_fraction: float = 0.9
    batch_size: int = 16
    full_batch_size: int = 8
    lr: float = 1e-3
    final_lr_ratio: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    loss: str = "l2"
    flips: bool = True
    voxel_mm: float | None = None
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 25
    threads: int | None = None

    def __post_init__(self) -> None:
        get_protocol(self.protocol)
        size = scale_size(self.scale)
        m = self.unet.size_multiple
        if size % m:
            raise ValueError(f"image size {size} is not a multiple of {m} (UNet levels)")
        if self.crop is not None and (self.crop % m or not m <= self.crop <= size):
            raise ValueError(
                f"crop {self.crop}: expected a multiple of {m} and at most the image size {size}"
            )
        if self.steps < 1 or self.batch_size < 1 or self.full_batch_size < 1:
            raise ValueError("steps, batch_size and full_batch_size must be >= 1")
        if not 0.0 <= self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in [0, 1], got {self.crop_fraction}")
        if self.lr <= 0 or not 0.0 < self.final_lr_ratio <= 1.0 or self.warmup_steps < 0:
            raise ValueError("need lr > 0, 0 < final_lr_ratio <= 1 and warmup_steps >= 0")
        if self.loss not in ("l2", "l1"):
            raise ValueError(f"loss must be 'l2' or 'l1', got {self.loss!r}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1")
        if self.voxel_mm is not None and self.voxel_mm <= 0:
            raise ValueError(f"voxel_mm must be positive, got {self.voxel_mm}")

    @property
    def image_size(self) -> int:
        return scale_size(self.scale)

    @property
    def crop_steps(self) -> int:
        """Steps of the crop phase (0 without crops)."""
        return 0 if self.crop is None else round(self.crop_fraction * self.steps)

    def phase_at(self, step: int) -> tuple[int | None, int]:
        """(crop or None, batch size) of optimiser step ``step`` (0-based)."""
        if step < self.crop_steps:
            return self.crop, self.batch_size
        return None, self.full_batch_size

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to ``final_lr_ratio · lr`` at the last step."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        low = self.final_lr_ratio
        return self.lr * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet"] = self.unet.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict) -> FBPUNetTrainConfig:
        data = strict_fields(cls, data, "FBP-UNet training keys")
        if "unet" in data:
            data["unet"] = UNetConfig.from_dict(
                {**data["unet"], "in_channels": 1, "out_channels": 1}
            )
        return cls(**data)

    def to_yaml(self, path: str | Path) -> None:
        write_yaml_config(self, path)

    @classmethod
    def from_yaml(cls, path: str | Path) -> FBPUNetTrainConfig:
        return read_yaml_config(cls, path, "FBP-UNet training options")


@dataclass(frozen=True)
class FBPUNetSpec:
    """What ``config.json`` of an FBP-UNet folder records."""

    protocol: str
    image_size: int
    unet: UNetConfig
    scale: str | int = "cpu128"
    residual: bool = True
    loss: str = "l2"
    steps: int = 0
    wall_time_s: float = 0.0
    final_loss: float | None = None
    train_files: tuple[str, ...] = ()
    voxel_mm: float | None = None
    command: str = ""
    weights_dtype: str = "float32"
    kind: str = KIND
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet"] = self.unet.to_dict()
        d["train_files"] = list(self.train_files)
        return d

    @classmethod
    def from_dict(cls, data: dict, source: object = "config.json") -> FBPUNetSpec:
        if data.get("kind") != KIND:
            raise CheckpointError(
                f"{source}: holds a {data.get('kind')!r} network; expected kind {KIND!r}"
            )
        if data.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: unsupported format_version {data.get('format_version')!r}"
            )
        known = {f.name for f in fields(cls)}
        try:
            values = {k: v for k, v in data.items() if k in known}
            values["unet"] = UNetConfig.from_dict(values["unet"])
            values["train_files"] = tuple(values.get("train_files", ()))
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: malformed FBP-UNet config ({exc})") from exc


def read_fbp_unet_spec(path: str | Path) -> tuple[Path, FBPUNetSpec]:
    """The network folder behind ``path`` (network or run folder) and its spec."""
    folder = resolve_checkpoint(path)
    try:
        data = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{folder / CONFIG_FILE}: expected a JSON object")
    return folder, FBPUNetSpec.from_dict(data, folder / CONFIG_FILE)


def write_network(folder: Path, spec: FBPUNetSpec, state: dict[str, Tensor]) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"kind": KIND})
    (folder / CONFIG_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
