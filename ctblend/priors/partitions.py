"""Slice partitions for DiffusionBlend++ (pure index logic, no tensors of data).

A partition of a volume with Z slices is a list of 3-slice groups. Each group lists the
slice indices fed to the network as channels and which of its three outputs are written
back, so that every slice receives ε from exactly one group:

- adjacency (label 1): groups (j, j+1, j+2) for j = s, s+3, …; slices before s come from
  the window [0:3], slices after the last full group from the window [Z−3:Z] (each border
  window writes only the slices no other group covers). s is random in {0, 1, 2} or fixed 0.
- cross (label 3): blocks of 9 slices [9b, 9b + 9) split into {9b+m, 9b+m+3, 9b+m+6},
  m = 0, 1, 2; when Z is not a multiple of 9 the last block is shifted to [Z − 9, Z) and
  writes only the slices no earlier block covers, so every group is a true gap-3 triple
  inside the volume (Z >= 9). Below 9 slices no gap-3 partition exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

ADJACENT_LABEL = 1
CROSS_LABEL = 3


@dataclass(frozen=True)
class Group:
    """Three slice indices (network channels) and which channel outputs are written."""

    indices: tuple[int, int, int]
    writes: tuple[bool, bool, bool]


@dataclass(frozen=True)
class Partition:
    """Groups covering Z slices, the slice-gap label they share, and the kind of partition."""

    groups: tuple[Group, ...]
    label: int
    kind: Literal["adjacency", "cross"]
    num_slices: int


def _check_z(num_slices: int) -> None:
    if num_slices < 3:
        raise ValueError(f"a 3-slice partition needs at least 3 slices, got Z = {num_slices}")


def _merge_same_indices(groups: list[Group]) -> tuple[Group, ...]:
    """Merge groups with identical indices (their written positions are disjoint)."""
    merged: dict[tuple[int, int, int], tuple[bool, bool, bool]] = {}
    for g in groups:
        old = merged.get(g.indices, (False, False, False))
        merged[g.indices] = tuple(a or b for a, b in zip(old, g.writes, strict=True))
    return tuple(Group(idx, w) for idx, w in merged.items() if any(w))


def adjacency_partition(num_slices: int, offset: int = 0) -> Partition:
    """Adjacent-slice groups starting at ``offset`` ∈ {0, 1, 2}, border windows, label 1."""
    _check_z(num_slices)
    if offset not in (0, 1, 2):
        raise ValueError(f"adjacency offset must be 0, 1 or 2, got {offset}")
    z = num_slices
    groups: list[Group] = []
    if offset > 0:
        groups.append(Group((0, 1, 2), tuple(i < offset for i in range(3))))
    j = offset
    while j + 3 <= z:
        groups.append(Group((j, j + 1, j + 2), (True, True, True)))
        j += 3
    if j < z:
        groups.append(Group((z - 3, z - 2, z - 1), tuple(z - 3 + i >= j for i in range(3))))
    return Partition(_merge_same_indices(groups), ADJACENT_LABEL, "adjacency", z)


def cross_partition(num_slices: int) -> Partition:
    """Gap-3 groups {s+m, s+m+3, s+m+6} over 9-slice blocks, the last at [Z − 9, Z), label 3.

    Needs Z >= 9. A shifted last block writes only the slices earlier blocks left out.
    """
    if num_slices < 9:
        raise ValueError(f"a cross (gap-3) partition needs at least 9 slices, got Z = {num_slices}")
    z = num_slices
    starts = list(range(0, z - 8, 9))
    if starts[-1] + 9 < z:
        starts.append(z - 9)
    groups, covered = [], 0
    for s in starts:
        for m in range(3):
            idx = tuple(s + m + 3 * k for k in range(3))
            groups.append(Group(idx, tuple(i >= covered for i in idx)))
        covered = s + 9
    return Partition(tuple(g for g in groups if any(g.writes)), CROSS_LABEL, "cross", num_slices=z)


@dataclass(frozen=True)
class PartitionPolicy:
    """Which partition to use at sampling step ``step`` (0-based).

    offset: "random" draws s ∈ {0, 1, 2} per step, "fixed" uses s = 0.
    cross_every: k > 0 uses the cross partition when step % k == 0, i.e. steps 0, k, 2k, …;
    0 never uses it. For k = 2 this is the authors' code (efzero/DiffusionBlend,
    ``eval_3DCT_blendcond.py``): ``ct += 1`` at the top of every step, then
    ``if ct % 2 == 1: ###147258369 … et_ = self.vps_blend(xt, model, t, …)``, so its first
    step (ct = 1) and every second one after it use the slice-jump (cross) partition.
    Volumes of fewer than 9 slices have no cross partition and always use adjacency.

    Ablations: fixed partition = PartitionPolicy("fixed", 0); adjacency only =
    PartitionPolicy("random", 0); default = adjacency + cross every 2nd step.
    """

    offset: Literal["random", "fixed"] = "random"
    cross_every: int = 2

    def __post_init__(self) -> None:
        if self.offset not in ("random", "fixed"):
            raise ValueError(f"offset must be 'random' or 'fixed', got {self.offset!r}")
        if self.cross_every < 0:
            raise ValueError(f"cross_every must be >= 0, got {self.cross_every}")

    def __call__(self, num_slices: int, step: int, rng: torch.Generator | None = None) -> Partition:
        """The partition for ``step``; ``rng`` draws the adjacency offset (global RNG if None)."""
        if self.cross_every and step % self.cross_every == 0 and num_slices >= 9:
            return cross_partition(num_slices)
        offset = 0
        if self.offset == "random":
            offset = int(torch.randint(0, 3, (1,), generator=rng))
        return adjacency_partition(num_slices, offset)
