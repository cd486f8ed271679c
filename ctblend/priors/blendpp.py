"""DiffusionBlend++ prior: ε of a volume from 3-slice groups of a (random) partition."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ctblend.priors.base import NetworkPrior, check_volume
from ctblend.priors.partitions import Partition, PartitionPolicy


def scatter_groups(group_eps: Tensor, partition: Partition) -> Tensor:
    """Assemble per-slice ε from group outputs.

    group_eps: (G, 3, H, W) in the order of ``partition.groups`` → (Z, H, W); each slice takes
    the output of the one group position that writes it.
    """
    z = partition.num_slices
    out = group_eps.new_empty((z, *group_eps.shape[2:]))
    src = [
        (g, k, idx)
        for g, grp in enumerate(partition.groups)
        for k, (idx, w) in enumerate(zip(grp.indices, grp.writes, strict=True))
        if w
    ]
    g_idx, k_idx, z_idx = (torch.tensor(v, device=group_eps.device) for v in zip(*src, strict=True))
    out[z_idx] = group_eps[g_idx, k_idx]
    return out


class BlendPPPrior(NetworkPrior):
    """``eps(x_t, t, step)`` for a (Z, H, W) volume with a 3-in/3-out gap-conditioned network.

    At each step the ``policy`` chooses a partition (adjacency with random offset, or cross
    every k-th step); its groups are evaluated ``options.group_batch`` at a time.
    """

    kind = "blend++"

    def __init__(self, *network: Any, policy: PartitionPolicy | None = None, **options: Any):
        """``network``/``options``: those of :class:`~ctblend.priors.base.NetworkPrior`."""
        super().__init__(*network, **options)
        self.policy = policy or PartitionPolicy()

    def with_policy(self, policy: PartitionPolicy) -> BlendPPPrior:
        """This prior (sharing its network) with another partition policy."""
        clone = copy.copy(self)
        clone.policy = policy
        return clone

    def eps_groups(self, groups: Tensor, t: int, label: int) -> Tensor:
        """groups: (G, 3, H, W) 3-slice patches with gap ``label`` → ε (G, 3, H, W)."""
        return self.net(groups, t, label)

    def eps(
        self, x_t: Tensor, t: int, step: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """x_t: (Z, H, W), Z >= 3 → ε (Z, H, W)."""
        check_volume(x_t, self.image_size)
        partition = self.policy(x_t.shape[0], step, generator)
        index = torch.tensor([g.indices for g in partition.groups], device=x_t.device)
        group_eps = self.eps_groups(x_t[index], t, partition.label)
        return scatter_groups(group_eps, partition).to(x_t.dtype)

    def eps_batch(
        self, x_t: Tensor, t: int, step: int, generators: Sequence[torch.Generator]
    ) -> Tensor:
        """K independent volumes x_t (K, Z, H, W) → ε (K, Z, H, W): volume k is partitioned
        with ``generators[k]`` (as :meth:`eps` would), all groups in one batched network pass
        (one label: whether a step is a cross step depends on the step alone)."""
        check_volume(x_t[0], self.image_size)
        parts = [self.policy(x_t.shape[1], step, g) for g in generators]
        groups = [
            v[torch.tensor([g.indices for g in p.groups], device=x_t.device)]
            for v, p in zip(x_t, parts, strict=True)
        ]
        group_eps = self.eps_groups(torch.cat(groups), t, parts[0].label)
        chunks = group_eps.split([len(p.groups) for p in parts])
        eps = [scatter_groups(c, p) for c, p in zip(chunks, parts, strict=True)]
        return torch.stack(eps).to(x_t.dtype)
