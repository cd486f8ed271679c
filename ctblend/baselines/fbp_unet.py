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
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

import operators as ops
from ctblend.data.datasets import FBPPairDataset
from ctblend.data.scaling import scale_size
from ctblend.io import open_hdf5_volume
from ctblend.models.unet import UNet, UNetConfig
from ctblend.priors.loading import (
    CONFIG_FILE,
    LATEST_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    atomic_write_text,
    load_state_checked,
    replace_dir,
    resolve_checkpoint,
)
from ctblend.protocol import Protocol, get_protocol
from ctblend.training.checkpoint import (
    CHECKPOINTS_DIR,
    STATE_DIR,
    TRAIN_CONFIG_FILE,
    find_latest,
    load_optimizer,
    load_rng,
    save_optimizer,
    save_rng,
)
from ctblend.training.config import read_yaml_config
from ctblend.training.losslog import LossLog, plot_loss_curve

__all__ = [
    "DEFAULT_UNET",
    "KIND",
    "FBPUNet",
    "FBPUNetSpec",
    "FBPUNetTrainConfig",
    "ResidualUNet",
    "TrainSummary",
    "add_arguments",
    "export_fbp_unet",
    "run",
    "save_fbp_unet",
    "train_fbp_unet",
]

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


class ResidualUNet(nn.Module):
    """``forward(x_fbp (B, 1, H, W)) → x_fbp + UNet(2 x_fbp − 1)``, all in [0, 1] units."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        if (config.in_channels, config.out_channels) != (1, 1):
            raise ValueError(
                f"an FBP-UNet needs 1 input and 1 output channel, the UNet config has "
                f"({config.in_channels}, {config.out_channels})"
            )
        self.unet = UNet(config)

    def forward(self, x: Tensor) -> Tensor:
        zeros = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return x + self.unet(2.0 * x - 1.0, zeros, zeros)


# --- configuration and the network record ---------------------------------------------------


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
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown FBP-UNet training keys {sorted(unknown)}")
        data = dict(data)
        if "unet" in data:
            data["unet"] = UNetConfig.from_dict(
                {**data["unet"], "in_channels": 1, "out_channels": 1}
            )
        return cls(**data)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

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


def _write_network(folder: Path, spec: FBPUNetSpec, state: dict[str, Tensor]) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"kind": KIND})
    (folder / CONFIG_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")


# --- inference --------------------------------------------------------------------------------


class FBPUNet:
    """A trained FBP-UNet: ``refine(x_fbp (Z, H, W)) → (Z, H, W)`` slice by slice."""

    kind = KIND

    def __init__(self, model: ResidualUNet, spec: FBPUNetSpec, name: str = KIND, batch: int = 16):
        self.model = model.eval()
        self.spec = spec
        self.name = name
        self.batch = int(batch)

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def protocol(self) -> str:
        return self.spec.protocol

    @classmethod
    def load(
        cls,
        folder: str | Path,
        protocol: str | None = None,
        image_size: int | None = None,
        device: str | torch.device = "cpu",
        batch: int = 16,
    ) -> FBPUNet:
        """Load a network (or run) folder; ``protocol`` / ``image_size``: what the caller needs
        (a mismatch is a CheckpointError naming both)."""
        path, spec = read_fbp_unet_spec(folder)
        if protocol is not None and get_protocol(protocol).name != spec.protocol:
            raise CheckpointError(
                f"{folder}: FBP-UNet was trained for protocol {spec.protocol!r}, but "
                f"{protocol!r} was requested (one network per protocol)"
            )
        if image_size is not None and image_size != spec.image_size:
            raise CheckpointError(
                f"{folder}: FBP-UNet was trained at {spec.image_size}×{spec.image_size}, "
                f"but {image_size}×{image_size} was requested"
            )
        try:
            state = load_file(str(path / WEIGHTS_FILE))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path / WEIGHTS_FILE}: not a valid safetensors file") from exc
        model = ResidualUNet(spec.unet)
        load_state_checked(model, state, path / WEIGHTS_FILE)
        name = Path(folder).name if path == Path(folder) else f"{Path(folder).name}/{path.name}"
        return cls(model.to(device), spec, name=name, batch=batch)

    def refine(self, x_fbp: Tensor) -> Tensor:
        """``x_fbp`` ``(Z, H, W)`` in [0, 1] units → refined ``(Z, H, W)`` (same device, dtype)."""
        if not isinstance(x_fbp, Tensor) or x_fbp.ndim != 3:
            shape = tuple(getattr(x_fbp, "shape", ())) or type(x_fbp).__name__
            raise ValueError(f"refine expects a (Z, H, W) tensor, got {shape}")
        size = self.image_size
        if tuple(x_fbp.shape[1:]) != (size, size):
            raise ValueError(
                f"FBP-UNet {self.name} was trained on {size}×{size} slices, got "
                f"{tuple(x_fbp.shape[1:])}"
            )
        first = next(self.model.parameters())
        out = torch.empty_like(x_fbp)
        with torch.inference_mode():
            for start in range(0, x_fbp.shape[0], self.batch):
                chunk = x_fbp[start : start + self.batch, None].to(first.device, first.dtype)
                out[start : start + self.batch] = self.model(chunk)[:, 0].to(out)
        return out


def save_fbp_unet(folder: str | Path, spec: FBPUNetSpec, state_dict: dict[str, Tensor]) -> Path:
    """Write a network folder atomically (temporary folder + rename); replaces an old one."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_network(tmp, spec, state_dict)
        replace_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def export_fbp_unet(source: str | Path, dest: str | Path, dtype: str = "float16") -> Path:
    """Write a shippable network folder (weights in ``dtype`` + config.json, no training state)."""
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {list(dtypes)}, got {dtype!r}")
    folder, spec = read_fbp_unet_spec(source)
    weights = load_file(str(folder / WEIGHTS_FILE))
    weights = {k: v.to(dtypes[dtype]) if v.is_floating_point() else v for k, v in weights.items()}
    return save_fbp_unet(dest, replace(spec, weights_dtype=dtype), weights)


# --- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSummary:
    """Where a finished run is and how it went."""

    out_dir: Path
    checkpoint: Path
    steps: int
    final_loss: float | None
    wall_time_s: float
    model: ResidualUNet = field(repr=False, compare=False)


def _mean_voxel_mm(files: Sequence[Path], size: int) -> float:
    values = []
    for path in files:
        dset = open_hdf5_volume(path)
        try:
            spacing = dset.file.attrs.get("spacing_mm")
            if spacing is None:
                raise CheckpointError(
                    f"{path}: no spacing_mm attribute; pass voxel_mm for a +noise protocol"
                )
            values.append(float(spacing[1]) * dset.shape[1] / size)
        finally:
            dset.file.close()
    return float(np.mean(values))


def _slice_fbp(protocol: Protocol, size: int, voxel_mm: float) -> Callable[[Tensor], Tensor]:
    """``(1, H, W)`` truth → its FBP under ``protocol`` (noise from torch's seeded RNG)."""
    A = protocol.operator((1, size, size))

    def reconstruct(x: Tensor) -> Tensor:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        return ops.fbp(A, protocol.simulate(A, x, voxel_mm=voxel_mm, seed=seed))

    return reconstruct


class _PairPool:
    """All (FBP, truth) pairs of the training files in memory, ``(N, 1, H, W)`` each.

    Noiseless protocols build the pool once; ``+noise`` protocols draw fresh noise per epoch.
    """

    def __init__(self, dataset: FBPPairDataset, noisy: bool):
        self.dataset, self.noisy = dataset, noisy
        self.epoch: int | None = None
        self.fbp = self.truth = torch.empty(0)

    def at(self, epoch: int) -> tuple[Tensor, Tensor]:
        wanted = epoch if self.noisy else 0
        if self.epoch != wanted:
            self.dataset.set_epoch(wanted)
            pairs = [self.dataset[i] for i in range(len(self.dataset))]
            self.fbp = torch.stack([p[0] for p in pairs])
            self.truth = torch.stack([p[1] for p in pairs])
            self.epoch = wanted
        return self.fbp, self.truth


def _batch(
    fbp: Tensor,
    truth: Tensor,
    indices: list[int],
    crop: int | None,
    flips: bool,
    g: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Gather a batch, random ``crop`` windows and left-right flips (same for both images)."""
    x, y = fbp[indices], truth[indices]
    b, _, h, w = x.shape
    if crop is not None and crop < h:
        top = torch.randint(0, h - crop + 1, (b,), generator=g).tolist()
        left = torch.randint(0, w - crop + 1, (b,), generator=g).tolist()
        x = torch.stack(
            [
                x[i, :, t : t + crop, s : s + crop]
                for i, (t, s) in enumerate(zip(top, left, strict=True))
            ]
        )
        y = torch.stack(
            [
                y[i, :, t : t + crop, s : s + crop]
                for i, (t, s) in enumerate(zip(top, left, strict=True))
            ]
        )
    if flips:
        flip = torch.rand(b, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None, None], y.flip(-1), y)
    return x, y


def _check_resumable(checkpoint: Path, config: FBPUNetTrainConfig) -> None:
    old = FBPUNetTrainConfig.from_yaml(checkpoint / TRAIN_CONFIG_FILE)
    for name in ("protocol", "unet", "scale"):
        if getattr(old, name) != getattr(config, name):
            raise CheckpointError(
                f"{checkpoint}: cannot resume — {name} differs (checkpoint "
                f"{getattr(old, name)!r}, requested {getattr(config, name)!r}); use a new out_dir"
            )


def train_fbp_unet(
    protocol: str,
    files: Sequence[str | Path],
    out_dir: str | Path,
    steps: int,
    config: FBPUNetTrainConfig | None = None,
    resume: bool = True,
    command: str | None = None,
    progress: bool = False,
) -> TrainSummary:
    """Train (or resume) the FBP-UNet of ``protocol`` on the HDF5 ``files`` into ``out_dir``.

    ``config`` gives every other knob (its ``protocol`` and ``steps`` are replaced by the
    arguments). Raising ``steps`` and calling again continues a finished run; the cosine
    schedule then follows the new length.
    """
    name = get_protocol(protocol).name
    config = replace(config or FBPUNetTrainConfig(), protocol=name, steps=int(steps))
    files = [Path(f) for f in files]
    out_dir = Path(out_dir)
    command = command if command is not None else shlex.join([sys.executable, *sys.argv])
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / CHECKPOINTS_DIR).glob(".tmp_*"):
        shutil.rmtree(stale, ignore_errors=True)
    latest = find_latest(out_dir)
    if latest is not None and not resume:
        raise CheckpointError(
            f"{out_dir} already holds a run ({latest.name}); resume or use a new folder"
        )

    prot = get_protocol(name)
    size = config.image_size
    voxel_mm = config.voxel_mm or _mean_voxel_mm(files, size)
    dataset = FBPPairDataset(
        files, config.scale, _slice_fbp(prot, size, voxel_mm), seed=config.seed
    )
    pool = _PairPool(dataset, prot.noise)
    batch_max = max(config.batch_size, config.full_batch_size)
    if len(dataset) < batch_max:
        raise ValueError(f"{len(dataset)} training slices, fewer than one batch ({batch_max})")

    torch.manual_seed(config.seed)
    model = ResidualUNet(config.unet)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed * 1000 + 17)
    step, epoch, position, wall_before, last_loss = 0, 0, 0, 0.0, None
    if latest is not None:
        _check_resumable(latest, config)
        load_state_checked(model, load_file(str(latest / WEIGHTS_FILE)), latest / WEIGHTS_FILE)
        load_optimizer(optimizer, latest / STATE_DIR)
        load_rng(latest / STATE_DIR, 0, generator)
        state = json.loads((latest / STATE_DIR / "trainer.json").read_text())
        step, epoch, position = state["step"], state["epoch"], state["position"]
        wall_before, last_loss = state["wall_time_s"], state["final_loss"]
    losslog = LossLog(out_dir / "loss.csv", step)
    start = time.perf_counter()

    def wall() -> float:
        return wall_before + time.perf_counter() - start

    def save() -> Path:
        staging = out_dir / CHECKPOINTS_DIR / f".tmp_step_{step:08d}"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / STATE_DIR).mkdir(parents=True)
        spec = FBPUNetSpec(
            protocol=name,
            image_size=size,
            unet=config.unet,
            scale=config.scale,
            loss=config.loss,
            steps=step,
            wall_time_s=round(wall(), 1),
            final_loss=last_loss,
            train_files=tuple(p.name for p in files),
            voxel_mm=voxel_mm if prot.noise else None,
            command=command,
        )
        _write_network(staging, spec, model.state_dict())
        config.to_yaml(staging / TRAIN_CONFIG_FILE)
        save_optimizer(optimizer, staging / STATE_DIR)
        save_rng(staging / STATE_DIR, 0, generator)
        trainer = {"step": step, "epoch": epoch, "position": position, "wall_time_s": wall()}
        trainer["final_loss"] = last_loss
        (staging / STATE_DIR / "trainer.json").write_text(json.dumps(trainer, indent=1))
        final = out_dir / CHECKPOINTS_DIR / f"step_{step:08d}"
        replace_dir(staging, final)
        atomic_write_text(out_dir / LATEST_FILE, f"{CHECKPOINTS_DIR}/{final.name}\n")
        for old in sorted((out_dir / CHECKPOINTS_DIR).glob("step_*"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)
        plot_loss_curve(out_dir / "loss.csv", out_dir / "loss.png")
        return final

    model.train()
    bar = tqdm(total=config.steps, initial=min(step, config.steps), disable=not progress)
    window_loss, window_count, window_start = 0.0, 0, time.perf_counter()
    while step < config.steps:
        crop, batch = config.phase_at(step)
        if position + batch > len(dataset):
            epoch, position = epoch + 1, 0
        fbp, truth = pool.at(epoch)
        perm = torch.randperm(
            len(dataset), generator=torch.Generator().manual_seed(config.seed + epoch)
        )
        indices = perm[position : position + batch].tolist()
        position += batch
        x, y = _batch(fbp, truth, indices, crop, config.flips, generator)
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        out = model(x)
        loss = F.mse_loss(out, y) if config.loss == "l2" else F.l1_loss(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        window_loss += float(loss.detach())
        window_count += 1
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            now = time.perf_counter()
            last_loss = window_loss / window_count
            losslog.append(
                step=step,
                loss=f"{last_loss:.6g}",
                lr=f"{config.lr_at(step - 1):.3g}",
                samples_per_s=f"{window_count * batch / max(now - window_start, 1e-9):.2f}",
                crop=crop or size,
                wall_time_s=f"{wall():.1f}",
            )
            bar.set_postfix(loss=f"{last_loss:.3g}")
            window_loss, window_count, window_start = 0.0, 0, now
        if step % config.checkpoint_every == 0 or step == config.steps:
            save()
    bar.close()
    checkpoint = find_latest(out_dir)
    if checkpoint is None:
        checkpoint = save()
    model.eval()
    return TrainSummary(out_dir, checkpoint, step, last_loss, wall(), model)


# --- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ctblend train-fbp-unet`` (also ``python -m ctblend.baselines.fbp_unet``)."""
    parser.add_argument("--protocol", required=True, help="svct8, svct6, svct4, lact90 (+noise)")
    parser.add_argument("--files", nargs="*", default=[], help="training HDF5 volumes")
    parser.add_argument(
        "--ct-dir", help="a CT folder with MANIFEST.md: its 'train' volumes are used"
    )
    parser.add_argument("--out", required=True, help="run folder (resumed when it exists)")
    parser.add_argument("--steps", type=int, required=True, help="total optimiser steps")
    parser.add_argument("--config", help="FBPUNetTrainConfig YAML (other knobs)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--export", help="also write a float16 network folder here")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")


def run(args: argparse.Namespace) -> int:
    """Train from parsed arguments; print where the network is."""
    from ctblend.data.splits import manifest_split

    files = [Path(f) for f in args.files]
    if args.ct_dir:
        files += manifest_split(args.ct_dir)["train"]
    if not files:
        raise ValueError("no training files: give --files and/or --ct-dir")
    config = FBPUNetTrainConfig.from_yaml(args.config) if args.config else FBPUNetTrainConfig()
    if args.threads is not None:
        config = replace(config, threads=args.threads)
    command = getattr(args, "command", None)
    summary = train_fbp_unet(
        args.protocol, files, args.out, args.steps, config, command=command, progress=args.progress
    )
    print(
        f"{summary.checkpoint}: {summary.steps} steps, final loss {summary.final_loss:.4g}, "
        f"{summary.wall_time_s:.0f} s"
    )
    if args.export:
        print(f"exported {export_fbp_unet(summary.checkpoint, args.export)}")
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m ctblend.baselines.fbp_unet")
    add_arguments(_parser)
    _args = _parser.parse_args()
    _args.command = shlex.join(["python", "-m", "ctblend.baselines.fbp_unet", *sys.argv[1:]])
    sys.exit(run(_args))
