"""Process-group setup for ``torchrun`` (DDP): gloo on CPU, NCCL on GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank among world_size, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str) -> torch.device:
    """ "auto" → CUDA if available, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def setup(device: str = "auto") -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (if any).

    A single process (no WORLD_SIZE or WORLD_SIZE=1) gets a context without a group; an
    already initialised group is reused and left open.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    base = resolve_device(device)
    if world <= 1 and not dist.is_initialized():
        return DistContext(0, 1, 0, base, owns_group=False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank) if base.type == "cuda" else base
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns_group=owns)


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def mean_across_ranks(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise mean of ``values`` over all ranks (identity for one process)."""
    if not ctx.distributed:
        return values
    buf = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(buf)
    return (buf / ctx.world_size).tolist()
