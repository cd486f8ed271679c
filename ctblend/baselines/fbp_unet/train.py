"""Training an FBP-UNet on (FBP, truth) slice pairs; resumable run folders."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm.auto import tqdm

import operators as ops
from ctblend.baselines.fbp_unet.config import FBPUNetSpec, FBPUNetTrainConfig, write_network
from ctblend.baselines.fbp_unet.model import ResidualUNet
from ctblend.data.datasets import FBPPairDataset
from ctblend.io import open_hdf5_volume
from ctblend.io.output import replace_dir, write_text
from ctblend.priors.loading import (
    LATEST_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_state_checked,
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
from ctblend.training.losslog import LossLog, plot_loss_curve


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
        write_network(staging, spec, model.state_dict())
        config.to_yaml(staging / TRAIN_CONFIG_FILE)
        save_optimizer(optimizer, staging / STATE_DIR)
        save_rng(staging / STATE_DIR, 0, generator)
        trainer = {"step": step, "epoch": epoch, "position": position, "wall_time_s": wall()}
        trainer["final_loss"] = last_loss
        (staging / STATE_DIR / "trainer.json").write_text(json.dumps(trainer, indent=1))
        final = out_dir / CHECKPOINTS_DIR / f"step_{step:08d}"
        replace_dir(staging, final)
        write_text(out_dir / LATEST_FILE, f"{CHECKPOINTS_DIR}/{final.name}\n")
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
