"""Training checkpoints: a prior folder plus ``state/`` for exact resumption (no pickle).

Layout of a run folder::

    out_dir/latest                      "checkpoints/step_00000500" (replaced atomically)
    out_dir/checkpoints/step_00000500/  weights.safetensors (EMA), config.json, train.yaml,
                                        state/model.safetensors, state/optimizer.safetensors,
                                        state/optimizer.json, state/trainer.json,
                                        state/rng_rank{r}.safetensors + .json
    out_dir/loss.csv, out_dir/loss.png

Each checkpoint is written into a temporary folder and renamed into place, so a killed run
never leaves a partial checkpoint; ``latest`` only ever names complete ones.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ctblend.io.output import replace_dir, write_text
from ctblend.priors.loading import (
    LATEST_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    PriorSpec,
    load_state_checked,
    read_spec,
    resolve_checkpoint,
    save_prior,
    write_prior_files,
)
from ctblend.training.config import TrainConfig

STATE_DIR = "state"
TRAIN_CONFIG_FILE = "train.yaml"
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class TrainerState:
    """Scalars of a run at a checkpoint (``state/trainer.json``)."""

    step: int
    epoch: int
    position: int
    wall_time_s: float
    ema_updates: int
    world_size: int
    log_loss_sum: float = 0.0
    log_count: int = 0
    scaler: dict | None = None


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def find_latest(out_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None for a fresh folder."""
    latest = out_dir / LATEST_FILE
    if not latest.is_file():
        return None
    path = out_dir / latest.read_text().strip()
    if not (path / STATE_DIR / "trainer.json").is_file():
        raise CheckpointError(f"{latest} names {path}, which is not a complete checkpoint")
    return path


def staging_dir(out_dir: Path, step: int) -> Path:
    """The temporary folder all ranks write checkpoint ``step`` into before the rename."""
    return out_dir / CHECKPOINTS_DIR / f".tmp_{checkpoint_name(step)}"


# --- optimiser -------------------------------------------------------------------------


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Tensors of the optimiser state to safetensors, the rest (param groups) to JSON."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    meta = {"param_groups": sd["param_groups"], "scalars": scalars}
    (folder / "optimizer.json").write_text(json.dumps(meta, indent=1))


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    tensors = load_file(str(folder / "optimizer.safetensors"))
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --- random number generators ----------------------------------------------------------


def save_rng(folder: Path, rank: int, generator: torch.Generator) -> None:
    """Global torch (CPU, CUDA), trainer generator, Python and NumPy RNG states of one rank."""
    tensors = {"torch_cpu": torch.get_rng_state(), "trainer": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    save_file(tensors, str(folder / f"rng_rank{rank}.safetensors"))
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 (the global state datasets may use)
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    (folder / f"rng_rank{rank}.json").write_text(json.dumps(meta))


def load_rng(folder: Path, rank: int, generator: torch.Generator) -> bool:
    """Restore the states saved by ``save_rng``; False if this rank has none saved."""
    path = folder / f"rng_rank{rank}.safetensors"
    if not path.is_file():
        return False
    tensors = load_file(str(path))
    torch.set_rng_state(tensors["torch_cpu"])
    generator.set_state(tensors["trainer"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    meta = json.loads((folder / f"rng_rank{rank}.json").read_text())
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))  # noqa: NPY002
    return True


# --- whole checkpoints -----------------------------------------------------------------


def write_checkpoint(
    out_dir: Path,
    staging: Path,
    spec: PriorSpec,
    config: TrainConfig,
    weights: dict[str, torch.Tensor],
    model_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    keep: int,
) -> Path:
    """Complete a staged checkpoint (RNG files already written by every rank), rename it
    into place, point ``latest`` at it and prune older ones beyond ``keep``. Rank 0 only."""
    write_prior_files(staging, spec, weights)
    config.to_yaml(staging / TRAIN_CONFIG_FILE)
    sdir = staging / STATE_DIR
    save_file(
        {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()},
        str(sdir / "model.safetensors"),
    )
    save_optimizer(optimizer, sdir)
    (sdir / "trainer.json").write_text(json.dumps(asdict(state), indent=1))
    final = out_dir / CHECKPOINTS_DIR / checkpoint_name(state.step)
    replace_dir(staging, final)
    write_text(out_dir / LATEST_FILE, f"{CHECKPOINTS_DIR}/{final.name}\n")
    done = sorted(p for p in (out_dir / CHECKPOINTS_DIR).glob("step_*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_trainer_state(checkpoint: Path) -> TrainerState:
    return TrainerState(**json.loads((checkpoint / STATE_DIR / "trainer.json").read_text()))


def check_compatible(checkpoint: Path, config: TrainConfig) -> None:
    """A run may resume with other hyper-parameters, but not another network or schedule."""
    old = TrainConfig.from_yaml(checkpoint / TRAIN_CONFIG_FILE)
    for name in ("kind", "unet", "schedule", "image_size"):
        if getattr(old, name) != getattr(config, name):
            raise CheckpointError(
                f"{checkpoint}: cannot resume — {name} differs (checkpoint "
                f"{getattr(old, name)!r}, config {getattr(config, name)!r}); use a new out_dir"
            )


def load_model_state(checkpoint: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Load the raw training weights into ``model``; return the EMA weights of the checkpoint."""
    load_state_checked(
        model, load_file(str(checkpoint / STATE_DIR / "model.safetensors")), checkpoint
    )
    return load_file(str(checkpoint / WEIGHTS_FILE))


def export_weights(source: str | Path, dest: str | Path, dtype: str = "float16") -> Path:
    """Write a shippable prior folder (weights + config.json, no training state).

    dtype: "float16", "bfloat16" or "float32" for the stored weights; loading casts back
    to float32.
    """
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {list(dtypes)}, got {dtype!r}")
    folder = resolve_checkpoint(source)
    spec = read_spec(folder)
    weights = load_file(str(folder / WEIGHTS_FILE))
    weights = {k: v.to(dtypes[dtype]) if v.is_floating_point() else v for k, v in weights.items()}
    spec = PriorSpec.from_dict({**spec.to_dict(), "weights_dtype": dtype})
    return save_prior(dest, spec, weights)
