"""Volume priors: ε for a whole (Z, H, W) volume from 2D/3-slice diffusion networks."""

from __future__ import annotations

from ctblend.priors.base import PRIOR_KINDS, InferenceOptions, VolumePrior
from ctblend.priors.blend import BlendPrior
from ctblend.priors.blendpp import BlendPPPrior
from ctblend.priors.loading import (
    CheckpointError,
    DataScaling,
    PriorSpec,
    load_model,
    load_prior,
    read_spec,
    save_prior,
)
from ctblend.priors.partitions import (
    Group,
    Partition,
    PartitionPolicy,
    adjacency_partition,
    cross_partition,
)
from ctblend.priors.slice2d import Slice2DPrior
from ctblend.priors.unconditional import sample_patch, sample_unconditional

__all__ = [
    "PRIOR_KINDS",
    "BlendPPPrior",
    "BlendPrior",
    "CheckpointError",
    "DataScaling",
    "Group",
    "InferenceOptions",
    "Partition",
    "PartitionPolicy",
    "PriorSpec",
    "Slice2DPrior",
    "VolumePrior",
    "adjacency_partition",
    "cross_partition",
    "load_model",
    "load_prior",
    "read_spec",
    "sample_patch",
    "sample_unconditional",
    "save_prior",
]
