"""Posterior sampling: any ``VolumePrior`` × any ``Operator`` × a data-consistency strategy."""

from .consistency import (
    ADMMTVz,
    CGConsistency,
    DataConsistency,
    NoiseAwareConsistency,
    diff_z,
    diff_z_adjoint,
)
from .sampler import posterior_sample, posterior_samples

__all__ = [
    "ADMMTVz",
    "CGConsistency",
    "DataConsistency",
    "NoiseAwareConsistency",
    "diff_z",
    "diff_z_adjoint",
    "posterior_sample",
    "posterior_samples",
]
