"""Denoising score matching on ε for the three prior kinds, resumable and DDP-ready.

One step: x ∈ [0, 1] from the dataset → 2x − 1 → optional random crop per sample →
t ~ U{0, …, T−1}, ε ~ N(0, I) → x_t = √ᾱ_t x + √(1 − ᾱ_t) ε → MSE(net(x_t, t, gap), ε_target),
where ε_target is ε of all three slices (blend++), of the middle slice (blend, Algorithm 3:
all three slices are noised) or of the single slice (slice2d). AdamW with linear warm-up,
gradient clipping, EMA, autocast on GPU. The recipe knobs (augmentation, min-SNR-γ loss
weighting, cosine learning rate, a 2D network to start from) are ``TrainConfig`` fields; with
validation samples (``ctblend.training.data``) every checkpoint also writes the EMA network's
ε-MSE on them to ``val.csv``.

Everything random comes from RNGs whose states are checkpointed (a trainer generator per
rank for t, ε and crops; the global torch/NumPy/Python RNGs for dropout and the dataset), and
the data order is a function of (seed, epoch) with the position saved, so a killed run
resumes exactly (bit-identical weights on CPU in deterministic mode). Datasets with a
``set_epoch(epoch)`` method (ctblend.data's) are told the epoch of every item they read; if
their randomness depends only on (seed, epoch, index), resumption stays exact with DataLoader
workers too, otherwise use ``num_workers = 0``.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm.auto import tqdm

from ctblend.models.transfer import widen_from_2d
from ctblend.models.unet import UNet
from ctblend.priors.base import auto_precision
from ctblend.priors.loading import CheckpointError, PriorSpec, load_model
from ctblend.training import checkpoint as ckpt
from ctblend.training.augment import augment_batch
from ctblend.training.config import TrainConfig
from ctblend.training.distributed import DistContext, barrier, mean_across_ranks, setup, teardown
from ctblend.training.ema import EMA
from ctblend.training.losslog import LossLog, plot_loss_curve, write_csv
from ctblend.training.validation import Validator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepInfo:
    """What a callback sees after each optimiser step (``step`` = steps completed)."""

    step: int
    loss: float
    lr: float
    crop: int | None
    indices: tuple[int, ...]
    rank: int
    world_size: int


@dataclass(frozen=True)
class TrainResult:
    """Where the run is, how far it got, and this process's raw (non-EMA) model."""

    out_dir: Path
    checkpoint: Path
    steps: int
    last_loss: float | None
    wall_time_s: float
    model: nn.Module = field(repr=False, compare=False)


Callback = Callable[[StepInfo], None]

VAL_FILE = "val.csv"


class IndexStream:
    """Dataset indices per step for one rank: a fresh permutation per epoch from
    (seed, epoch); each step consumes ``batch × world`` positions and rank r takes its
    slice, so ranks see disjoint samples. Remainders shorter than a step are dropped."""

    def __init__(self, size: int, seed: int, rank: int, world: int, epoch: int, position: int):
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.epoch, self.position = epoch, position
        self._perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> Tensor:
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))

    def next(self, batch: int) -> tuple[list[int], int, int]:
        """Indices for this rank, and the (epoch, position) after the step."""
        need = batch * self.world
        if need > self.size:
            raise ValueError(
                f"dataset has {self.size} samples, fewer than one step needs "
                f"({batch} per process × {self.world} processes)"
            )
        if self.position + need > self.size:
            self.epoch, self.position = self.epoch + 1, 0
            self._perm = self._permutation(self.epoch)
        start = self.position + self.rank * batch
        indices = self._perm[start : start + batch].tolist()
        self.position += need
        return indices, self.epoch, self.position


class _EpochIndexed(Dataset):
    """Items addressed by (epoch, index): calls ``dataset.set_epoch`` (when it has one) in
    whichever process reads the item, so DataLoader workers follow the trainer's epochs."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if epoch != self.epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.epoch = epoch
        return self.dataset[index]


def _batch_sampler(
    stream: IndexStream, batch: int, record: deque
) -> Iterator[list[tuple[int, int]]]:
    while True:
        indices, epoch, position = stream.next(batch)
        record.append((indices, epoch, position))
        yield [(epoch, i) for i in indices]


def _random_crop(x: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """x: (B, C, H, W) → (B, C, size, size), an independent random window per sample."""
    b, _, h, w = x.shape
    top = torch.randint(0, h - size + 1, (b,), generator=generator).tolist()
    left = torch.randint(0, w - size + 1, (b,), generator=generator).tolist()
    return torch.stack(
        [
            x[i, :, r : r + size, c : c + size]
            for i, (r, c) in enumerate(zip(top, left, strict=True))
        ]
    )


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = fp32). bf16 where the device lacks native bf16 (the same test
    as inference, ``priors.base.auto_precision``) falls back to fp32 with a warning: emulated
    bf16 was measured ~77× slower than fp32 on a CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "bf16" and auto_precision(device) != "bf16":
        log.warning("precision bf16: %s has no native bf16; training in fp32", device)
        return None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _check_batch(batch, config: TrainConfig) -> tuple[Tensor, Tensor]:
    if not (isinstance(batch, (list, tuple)) and len(batch) == 2):
        raise ValueError("the dataset must yield (x, label) pairs with x of shape (C, H, W)")
    x, label = batch
    cin = config.unet.in_channels
    size = config.image_size
    if x.ndim != 4 or x.shape[1] != cin or tuple(x.shape[2:]) != (size, size):
        raise ValueError(
            f"a {config.kind!r} prior at image_size {size} needs samples of shape "
            f"({cin}, {size}, {size}), the dataset gave {tuple(x.shape[1:])}"
        )
    return x, torch.as_tensor(label)


class _Run:
    """State of one training process."""

    def __init__(self, config: TrainConfig, out_dir: Path, ctx: DistContext):
        self.config, self.out_dir, self.ctx = config, out_dir, ctx
        torch.manual_seed(config.seed)
        self.model = UNet(config.unet).to(ctx.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net: nn.Module = (
            DistributedDataParallel(
                self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
            )
            if ctx.distributed
            else self.model
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.lr,
            betas=config.adam_betas,
            weight_decay=config.weight_decay,
        )
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.amp_dtype = _amp_dtype(config.precision, ctx.device)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.amp_dtype == torch.float16)
        self.generator = torch.Generator().manual_seed(config.seed * 1000 + 17 + ctx.rank)
        torch.manual_seed(config.seed * 1000 + 29 + ctx.rank)
        self.step, self.epoch, self.position = 0, 0, 0
        self.wall_before = 0.0
        self.log_loss_sum, self.log_count = 0.0, 0
        self.validator: Validator | None = None

    def start_from(self, folder: str | Path) -> None:
        """A fresh run's first weights: a prior of the same kind and network (its weights), or a
        2D prior widened to this kind (ctblend.models.transfer); the EMA restarts from them and
        the run's first step is ``config.start_step``."""
        net, spec = load_model(folder)
        if spec.kind == "slice2d" and self.config.kind != "slice2d":
            net = widen_from_2d(net, self.config.kind)
        elif spec.kind != self.config.kind:
            raise CheckpointError(
                f"init_from {folder}: a {spec.kind!r} prior cannot start a {self.config.kind!r} run"
            )
        if net.config != self.config.unet:
            raise CheckpointError(
                f"init_from {folder}: its network {net.config} differs from the config's "
                f"{self.config.unet}; train with that prior's UNet settings"
            )
        self.model.load_state_dict(net.state_dict())
        if self.ema is not None:
            self.ema = EMA(self.model, self.config.ema_decay)
        self.step = self.config.start_step

    def ema_model(self) -> nn.Module:
        """The network with the weights that ship (EMA when enabled), as a separate copy."""
        if self.ema is None:
            return self.model
        model = UNet(self.config.unet).to(self.ctx.device)
        model.load_state_dict(self.ema.state_dict())
        return model

    def resume(self, checkpoint: Path) -> None:
        ckpt.check_compatible(checkpoint, self.config)
        ema_weights = ckpt.load_model_state(checkpoint, self.model)
        ckpt.load_optimizer(self.optimizer, checkpoint / ckpt.STATE_DIR)
        state = ckpt.read_trainer_state(checkpoint)
        if self.ema is not None:
            self.ema.load_state_dict(ema_weights, state.ema_updates)
        if state.scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(state.scaler)
        self.step, self.epoch, self.position = state.step, state.epoch, state.position
        self.wall_before = state.wall_time_s
        self.log_loss_sum, self.log_count = state.log_loss_sum, state.log_count
        restored = state.world_size == self.ctx.world_size and ckpt.load_rng(
            checkpoint / ckpt.STATE_DIR, self.ctx.rank, self.generator
        )
        if not restored:
            seed = self.config.seed * 1000 + 7919 * state.step + self.ctx.rank
            self.generator.manual_seed(seed)
            torch.manual_seed(seed + 1)
            log.warning(
                "resuming %s with %d processes (saved with %d): random streams are re-seeded, "
                "so this continuation is not bit-identical to an uninterrupted run",
                checkpoint,
                self.ctx.world_size,
                state.world_size,
            )

    def lr_at(self, step: int) -> float:
        """The LR of ``step``: a linear warm-up over ``warmup_steps`` from the run's first step
        (``start_step``: a continued run's fresh AdamW moments warm up again), times the cosine
        of the whole budget after the warm-up of step 0."""
        cfg = self.config
        warm = cfg.warmup_steps
        since = step - cfg.start_step
        lr = cfg.lr * min(1.0, (since + 1) / warm) if warm else cfg.lr
        if cfg.lr_schedule == "cosine" and step >= warm:
            frac = min(1.0, (step - warm) / max(1, cfg.total_steps - warm))
            lr *= cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
        return lr

    def train_step(self, x: Tensor, label: Tensor, crop: int | None) -> float:
        """One optimiser step on a batch x (B, C, H, W) in [0, 1] with gap labels (B,)."""
        cfg, dev = self.config, self.ctx.device
        x = augment_batch(x.to(dev, torch.float32), cfg.augment, self.generator) * 2.0 - 1.0
        if crop is not None and crop < x.shape[-1]:
            x = _random_crop(x, crop, self.generator)
        b = x.shape[0]
        t = torch.randint(0, cfg.schedule.num_timesteps, (b,), generator=self.generator)
        noise = torch.randn(x.shape, generator=self.generator).to(dev)
        x_t = cfg.schedule.q_sample(x, t.to(dev), noise)
        if cfg.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        target = noise[:, 1:2] if cfg.kind == "blend" else noise
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        autocast = (
            torch.autocast(dev.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        )
        with autocast:
            out = self.net(x_t, t, label.to(dev))
        per_sample = ((out.float() - target) ** 2).mean(dim=(1, 2, 3))
        if cfg.loss_weighting == "min_snr":
            a = cfg.schedule.alpha_bar(t).to(dev, torch.float32)
            snr = (a / (1.0 - a)).view(b)
            per_sample = per_sample * snr.clamp(max=cfg.min_snr_gamma) / snr
        loss = per_sample.mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return float(loss.detach())

    def save(self, command: str, wall_time_s: float) -> Path:
        """Write checkpoint ``self.step`` (collective: every rank must call it)."""
        cfg, ctx = self.config, self.ctx
        staging = ckpt.staging_dir(self.out_dir, self.step)
        if ctx.is_main:
            shutil.rmtree(staging, ignore_errors=True)
            (staging / ckpt.STATE_DIR).mkdir(parents=True)
        barrier(ctx)
        ckpt.save_rng(staging / ckpt.STATE_DIR, ctx.rank, self.generator)
        barrier(ctx)
        final = self.out_dir / ckpt.CHECKPOINTS_DIR / ckpt.checkpoint_name(self.step)
        if ctx.is_main:
            spec = PriorSpec(
                kind=cfg.kind,
                image_size=cfg.image_size,
                unet=cfg.unet,
                schedule=cfg.schedule,
                data_scaling=cfg.data_scaling,
                command=command,
                steps=self.step,
                wall_time_s=round(wall_time_s, 3),
            )
            state = ckpt.TrainerState(
                step=self.step,
                epoch=self.epoch,
                position=self.position,
                wall_time_s=wall_time_s,
                ema_updates=self.ema.num_updates if self.ema else 0,
                world_size=ctx.world_size,
                log_loss_sum=self.log_loss_sum,
                log_count=self.log_count,
                scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            )
            weights = self.ema.state_dict() if self.ema else self.model.state_dict()
            ckpt.write_checkpoint(
                self.out_dir,
                staging,
                spec,
                cfg,
                weights,
                self.model.state_dict(),
                self.optimizer,
                state,
                cfg.keep_checkpoints,
            )
            if self.validator is not None:
                self.write_validation(wall_time_s)
            plot_loss_curve(self.out_dir / "loss.csv", self.out_dir / "loss.png")
        barrier(ctx)
        return final

    def write_validation(self, wall_time_s: float) -> None:
        """Append the EMA network's validation ε-MSE at this step to ``val.csv``."""
        scores = self.validator(self.ema_model())
        path = self.out_dir / VAL_FILE
        rows = (
            [r for r in LossLog.read(path) if int(r["step"]) < self.step] if path.is_file() else []
        )
        row = {"step": self.step, "wall_time_s": f"{wall_time_s:.1f}"}
        row["val_mean"] = f"{sum(scores.values()) / len(scores):.6g}"
        row.update({f"val_t{t}": f"{v:.6g}" for t, v in scores.items()})
        write_csv(path, list(row), [*rows, row])


def train(
    config: TrainConfig,
    dataset: Dataset,
    out_dir: str | Path,
    resume: bool = True,
    command: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    validation: tuple[Tensor, Tensor] | None = None,
) -> TrainResult:
    """Train a prior on ``dataset`` (items ``(x (C, H, W) in [0, 1], gap label)``) into ``out_dir``.

    ``validation``: held-out samples ``(x (N, C, S, S), labels (N,))`` (from
    ``training_datasets``) whose ε-MSE is written to ``val.csv`` at every checkpoint.

    Resumes from ``out_dir``'s latest checkpoint when ``resume`` (an existing run with
    ``resume=False`` is an error, never overwritten); a finished run returns at once, and
    raising the phase steps in ``config`` continues it. Under ``torchrun`` every process calls
    this; ranks see different samples and rank 0 writes. ``command`` is recorded in the
    checkpoint (default: this process's command line).
    """
    out_dir = Path(out_dir)
    command = command if command is not None else shlex.join([sys.executable, *sys.argv])
    ctx = setup(config.device)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    if config.deterministic:
        if ctx.device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        return _train(
            config, dataset, out_dir, resume, command, progress, callbacks, ctx, validation
        )
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        teardown(ctx)


def _train(
    config: TrainConfig,
    dataset: Dataset,
    out_dir: Path,
    resume: bool,
    command: str,
    progress: bool,
    callbacks: Sequence[Callback],
    ctx: DistContext,
    validation: tuple[Tensor, Tensor] | None = None,
) -> TrainResult:
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in (out_dir / ckpt.CHECKPOINTS_DIR).glob(".tmp_*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a run killed mid-checkpoint
    barrier(ctx)
    latest = ckpt.find_latest(out_dir)
    if latest is not None and not resume:
        raise CheckpointError(
            f"{out_dir} already holds a training run ({latest.name}); resume it or use a new folder"
        )
    run = _Run(config, out_dir, ctx)
    if latest is not None:
        run.resume(latest)
    elif config.init_from is not None:
        run.start_from(config.init_from)
    if validation is not None:
        target = "middle" if config.kind == "blend" else "all"
        run.validator = Validator(validation, config.schedule, config.val_timesteps, target)
        if latest is None and ctx.is_main:
            run.write_validation(0.0)  # the starting point of the curve
    losslog = LossLog(out_dir / "loss.csv", run.step) if ctx.is_main else None
    total = config.total_steps
    start = time.perf_counter()
    window_start, window_samples = start, 0
    last_logged: float | None = None
    bar = tqdm(
        total=total,
        initial=min(run.step, total),
        disable=not (progress and ctx.is_main),
        unit="step",
        dynamic_ncols=True,
    )
    checked = False
    out_of_time = False
    indexed = _EpochIndexed(dataset)
    while run.step < total:
        phase = config.phase_at(run.step)
        batch = config.batch_size_at(run.step)
        phase_end = config.phase_end(run.step)
        stream = IndexStream(
            len(dataset), config.seed, ctx.rank, ctx.world_size, run.epoch, run.position
        )
        record: deque = deque()
        loader = DataLoader(
            indexed,
            batch_sampler=_batch_sampler(stream, batch, record),
            num_workers=config.num_workers,
            collate_fn=default_collate,
            pin_memory=ctx.device.type == "cuda",
            generator=torch.Generator().manual_seed(config.seed + 104729 * run.step + ctx.rank),
        )
        for raw in loader:
            indices, run.epoch, run.position = record.popleft()
            if not checked:
                _check_batch(raw, config)
                checked = True
            x, label = raw
            loss = run.train_step(x, torch.as_tensor(label), phase.crop)
            run.log_loss_sum += loss
            run.log_count += 1
            window_samples += x.shape[0] * ctx.world_size
            info = StepInfo(
                run.step,
                loss,
                run.lr_at(run.step - 1),
                phase.crop,
                tuple(indices),
                ctx.rank,
                ctx.world_size,
            )
            for cb in callbacks:
                cb(info)
            bar.update(1)
            if run.step % config.log_every == 0 or run.step == total:
                now = time.perf_counter()
                over = bool(config.time_budget_s) and now - start >= config.time_budget_s
                mean_loss, late = mean_across_ranks(
                    [run.log_loss_sum / max(run.log_count, 1), float(over)], ctx
                )
                out_of_time = late > 0
                rate = window_samples / max(now - window_start, 1e-9)
                last_logged = mean_loss
                if losslog is not None:
                    losslog.append(
                        step=run.step,
                        loss=f"{mean_loss:.6g}",
                        lr=f"{info.lr:.3g}",
                        samples_per_s=f"{rate:.3f}",
                        crop=phase.crop or config.image_size,
                        wall_time_s=f"{run.wall_before + now - start:.1f}",
                    )
                bar.set_postfix(loss=f"{mean_loss:.4f}", samples_per_s=f"{rate:.1f}")
                run.log_loss_sum, run.log_count = 0.0, 0
                window_start, window_samples = now, 0
            if run.step % config.checkpoint_every == 0 or run.step == total or out_of_time:
                run.save(command, run.wall_before + time.perf_counter() - start)
            if run.step >= phase_end or out_of_time:
                break
        if out_of_time:
            log.warning(
                "%s: time budget of %s s spent at step %d", out_dir, config.time_budget_s, run.step
            )
            break
    bar.close()
    latest = ckpt.find_latest(out_dir)
    if latest is None:
        raise CheckpointError(f"{out_dir}: no checkpoint was written")
    return TrainResult(
        out_dir=out_dir,
        checkpoint=latest,
        steps=run.step,
        last_loss=last_logged,
        wall_time_s=run.wall_before + time.perf_counter() - start,
        model=run.model,
    )
