"""Training configuration: one immutable dataclass, YAML in and out, named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from ctblend.diffusion import VPSchedule
from ctblend.models.unet import KIND_CHANNELS, UNetConfig
from ctblend.priors.base import PRIOR_KINDS
from ctblend.priors.loading import DataScaling

PRESETS = ("tiny", "cpu128", "cpu128-short", "paper256")


@dataclass(frozen=True)
class Phase:
    """``steps`` optimiser steps on random ``crop`` × ``crop`` crops (None = full slices).

    batch_size: per-process batch for this phase (None = TrainConfig.batch_size).
    """

    steps: int
    crop: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"a phase needs steps >= 1, got {self.steps}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"phase batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (besides the dataset).

    The UNet's in/out channels follow ``kind`` (blend++: 3→3, blend: 3→1, slice2d: 1→1).
    precision: "auto" (bf16 on CUDA when supported, else fp16 on CUDA, fp32 on CPU), "fp32",
    "bf16" or "fp16". ema_decay 0 disables EMA (the raw weights are shipped).
    """

    kind: str = "blend++"
    image_size: int = 128
    unet: UNetConfig = field(default_factory=UNetConfig)
    schedule: VPSchedule = field(default_factory=VPSchedule)
    data_scaling: DataScaling = field(default_factory=DataScaling)
    phases: tuple[Phase, ...] = (Phase(1000),)
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    deterministic: bool = False
    num_workers: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", tuple(self.phases))
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        if self.kind not in PRIOR_KINDS:
            raise ValueError(f"unknown prior kind {self.kind!r}; expected one of {PRIOR_KINDS}")
        expected = KIND_CHANNELS[self.kind]
        if (self.unet.in_channels, self.unet.out_channels) != expected:
            raise ValueError(
                f"kind {self.kind!r} needs UNet (in, out) channels {expected}, got "
                f"({self.unet.in_channels}, {self.unet.out_channels})"
            )
        m = self.unet.size_multiple
        if self.image_size % m:
            raise ValueError(f"image_size {self.image_size} is not a multiple of {m}")
        if not self.phases:
            raise ValueError("at least one training phase is needed")
        for phase in self.phases:
            if phase.crop is not None and (
                phase.crop % m or not m <= phase.crop <= self.image_size
            ):
                raise ValueError(
                    f"crop {phase.crop} must be a multiple of {m} and at most image_size "
                    f"{self.image_size}"
                )
        positive = ("batch_size", "checkpoint_every", "keep_checkpoints", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("need lr > 0, warmup_steps >= 0 and grad_clip >= 0 (0 = no clipping)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def phase_at(self, step: int) -> Phase:
        """The phase that optimiser step ``step`` (0-based) belongs to (the last one beyond)."""
        end = 0
        for phase in self.phases:
            end += phase.steps
            if step < end:
                return phase
        return self.phases[-1]

    def phase_end(self, step: int) -> int:
        """The step at which the phase containing ``step`` ends (total_steps beyond)."""
        end = 0
        for phase in self.phases:
            end += phase.steps
            if step < end:
                return end
        return end

    def batch_size_at(self, step: int) -> int:
        return self.phase_at(step).batch_size or self.batch_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet"] = self.unet.to_dict()
        d["data_scaling"]["network_range"] = list(self.data_scaling.network_range)
        d["phases"] = [asdict(p) for p in self.phases]
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from plain data; UNet in/out channels are filled in from ``kind`` if absent."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown training config keys {sorted(unknown)}; known: {sorted(known)}"
            )
        data = dict(data)
        kind = data.get("kind", cls.kind)
        if kind not in KIND_CHANNELS:
            raise ValueError(f"unknown prior kind {kind!r}; expected one of {PRIOR_KINDS}")
        unet = dict(data.get("unet", {}))
        cin, cout = KIND_CHANNELS[kind]
        unet.setdefault("in_channels", cin)
        unet.setdefault("out_channels", cout)
        data["unet"] = UNetConfig.from_dict(unet)
        data["schedule"] = VPSchedule.from_dict(data.get("schedule", {}))
        data["data_scaling"] = DataScaling(**data.get("data_scaling", {}))
        if "phases" in data:
            data["phases"] = tuple(Phase(**p) for p in data["phases"])
        return cls(**data)

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes``; changing ``kind`` re-derives the UNet channels."""
        d = self.to_dict()
        if "kind" in changes:
            d["unet"].pop("in_channels")
            d["unet"].pop("out_channels")
        if isinstance(changes.get("unet"), UNetConfig):
            changes["unet"] = changes["unet"].to_dict()
        if "phases" in changes:
            changes["phases"] = [p if isinstance(p, dict) else asdict(p) for p in changes["phases"]]
        d.update(changes)
        return TrainConfig.from_dict(d)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        return read_yaml_config(cls, path, "training options")


def load_config(name_or_path: str | Path, **overrides) -> TrainConfig:
    """A preset (``PRESETS``: "tiny", "cpu128", "cpu128-short", "paper256") or a YAML file,
    with ``overrides`` applied."""
    if str(name_or_path) in PRESETS:
        ref = resources.files("ctblend") / "configs" / f"unet_{name_or_path}.yaml"
        with resources.as_file(ref) as path:
            config = TrainConfig.from_yaml(path)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"{path}: no such config file (presets: {', '.join(PRESETS)})")
        config = TrainConfig.from_yaml(path)
    return config.replace(**overrides) if overrides else config


def read_yaml_config(cls, path: str | Path, what: str):
    """``cls.from_dict`` of a YAML mapping, with one error naming the file on bad input."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read {what} ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of {what}")
    try:
        return cls.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
