"""Training configuration: one immutable dataclass, YAML in and out, named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from ctblend.config_io import read_yaml_config, strict_fields, write_yaml_config
from ctblend.diffusion import VPSchedule
from ctblend.models.unet import KIND_CHANNELS, UNetConfig
from ctblend.priors.base import PRIOR_KINDS
from ctblend.priors.loading import DataScaling

PRESETS = ("tiny", "cpu128", "cpu128-short", "gpu128", "paper256")


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
class Augment:
    """CT-plausible augmentation of training samples, each drawn per sample.

    With probability ``prob`` a sample is rotated by U(−rotate_deg, rotate_deg) degrees and
    scaled by U(1 − scale, 1 + scale) about the image centre (bilinear; outside = air, the
    lowest HU); ``z_reverse`` reverses the slice order of half the samples (3-slice kinds).
    Left–right flips are the dataset's. All zeros / False = no augmentation.
    """

    rotate_deg: float = 0.0
    scale: float = 0.0
    z_reverse: bool = False
    prob: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.rotate_deg <= 180.0:
            raise ValueError(f"augment.rotate_deg must be in [0, 180], got {self.rotate_deg}")
        if not 0.0 <= self.scale < 1.0:
            raise ValueError(f"augment.scale must be in [0, 1), got {self.scale}")
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"augment.prob must be in [0, 1], got {self.prob}")

    @property
    def geometric(self) -> bool:
        return self.prob > 0 and (self.rotate_deg > 0 or self.scale > 0)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (besides the dataset).

    The UNet's in/out channels follow ``kind`` (blend++: 3→3, blend: 3→1, slice2d: 1→1).
    precision: "auto" (bf16 on CUDA when supported, else fp16 on CUDA, fp32 on CPU), "fp32",
    "bf16" or "fp16". ema_decay 0 disables EMA (the raw weights are shipped).
    loss_weighting: "uniform" (plain ε-MSE) or "min_snr" (min-SNR-γ: each timestep's ε-MSE
    weighted by min(SNR_t, γ) / SNR_t). lr_schedule: "constant" after warm-up, or "cosine"
    decay to ``lr * lr_min_ratio`` at the last step. holdout: the fraction of slices at the
    superior end of every training volume kept out of training as the validation slab
    (0 = none); its ε-MSE at fixed noise and ``val_timesteps`` is written to ``val.csv`` at
    every checkpoint. init_from: a prior folder whose network starts the run, used only when
    the run starts, never on resume: a prior of the same kind and network continues from its
    weights; a 2D prior starts a 3-slice run (ctblend.models.transfer). start_step: with
    init_from, the optimiser step the new run starts at, so its phases and LR schedule go on
    from there (a run exported at step N — its fp16 EMA weights — continues in a later session
    with ``init_from=<export> start_step=N``; AdamW's moments and the EMA restart).
    time_budget_s: stop (with a checkpoint) at the first logging step after this many seconds of
    this call (0 = no limit); calling again continues the run.
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
    loss_weighting: Literal["uniform", "min_snr"] = "uniform"
    min_snr_gamma: float = 5.0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_min_ratio: float = 0.1
    augment: Augment = field(default_factory=Augment)
    holdout: float = 0.0
    val_timesteps: tuple[int, ...] = (50, 200, 500)
    val_samples: int = 24
    init_from: str | None = None
    start_step: int = 0
    time_budget_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", tuple(self.phases))
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        object.__setattr__(self, "val_timesteps", tuple(int(t) for t in self.val_timesteps))
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
        self._check_recipe()

    def _check_recipe(self) -> None:
        if self.loss_weighting not in ("uniform", "min_snr"):
            raise ValueError(
                f"loss_weighting must be uniform or min_snr, got {self.loss_weighting!r}"
            )
        if self.min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be > 0, got {self.min_snr_gamma}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ValueError(f"lr_min_ratio must be in [0, 1], got {self.lr_min_ratio}")
        if not 0.0 <= self.holdout < 0.5:
            raise ValueError(f"holdout must be in [0, 0.5), got {self.holdout}")
        steps = self.schedule.num_timesteps
        if not self.val_timesteps or not all(0 <= t < steps for t in self.val_timesteps):
            raise ValueError(f"val_timesteps {self.val_timesteps} must lie in [0, {steps})")
        if self.time_budget_s < 0:
            raise ValueError(f"time_budget_s must be >= 0 (0 = no limit), got {self.time_budget_s}")
        if self.val_samples < 1:
            raise ValueError(f"val_samples must be >= 1, got {self.val_samples}")
        if not 0 <= self.start_step < self.total_steps:
            raise ValueError(
                f"start_step={self.start_step}; expected an integer in [0, {self.total_steps}) "
                "(the total of the phases)"
            )
        if self.start_step and self.init_from is None:
            raise ValueError(f"start_step={self.start_step} needs init_from (the weights at it)")

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def _phase_and_end(self, step: int) -> tuple[Phase, int]:
        """The phase of ``step`` and the step at which it ends (the last one beyond)."""
        end = 0
        for phase in self.phases:
            end += phase.steps
            if step < end:
                return phase, end
        return self.phases[-1], end

    def phase_at(self, step: int) -> Phase:
        """The phase that optimiser step ``step`` (0-based) belongs to (the last one beyond)."""
        return self._phase_and_end(step)[0]

    def phase_end(self, step: int) -> int:
        """The step at which the phase containing ``step`` ends (total_steps beyond)."""
        return self._phase_and_end(step)[1]

    def batch_size_at(self, step: int) -> int:
        return self.phase_at(step).batch_size or self.batch_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet"] = self.unet.to_dict()
        d["data_scaling"]["network_range"] = list(self.data_scaling.network_range)
        d["phases"] = [asdict(p) for p in self.phases]
        d["adam_betas"] = list(self.adam_betas)
        d["val_timesteps"] = list(self.val_timesteps)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from plain data; UNet in/out channels are filled in from ``kind`` if absent."""
        data = strict_fields(cls, data, "training config keys")
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
        data["augment"] = Augment(**data.get("augment", {}))
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
        write_yaml_config(self, path)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        return read_yaml_config(cls, path, "training options")


def load_config(name_or_path: str | Path, **overrides) -> TrainConfig:
    """A preset (``PRESETS``: tiny, cpu128, cpu128-short, gpu128, paper256) or a YAML file,
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
