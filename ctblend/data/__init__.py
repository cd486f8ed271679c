"""Data layer: protocol scaling, training datasets, procedural phantom and train/test splits."""

from __future__ import annotations

from ctblend.data.datasets import FBPPairDataset, SliceDataset, SliceGroupDataset, WindowDataset
from ctblend.data.phantom import ct_phantom, phantom_spacing_mm
from ctblend.data.scaling import (
    HU_MAX,
    HU_MIN,
    crop_z,
    downsample_inplane,
    hu_to_unit,
    pad_z,
    resize_inplane,
    to_scale,
    unit_to_hu,
)
from ctblend.data.splits import manifest_split

__all__ = [
    "HU_MAX",
    "HU_MIN",
    "FBPPairDataset",
    "SliceDataset",
    "SliceGroupDataset",
    "WindowDataset",
    "crop_z",
    "ct_phantom",
    "downsample_inplane",
    "hu_to_unit",
    "manifest_split",
    "pad_z",
    "phantom_spacing_mm",
    "resize_inplane",
    "to_scale",
    "unit_to_hu",
]
