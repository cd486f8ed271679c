"""The one path from a volume and an acquisition to a reconstruction, its scores, figure and file.

:func:`simulate_case` (a volume + an acquisition → a :class:`Case`; or
:func:`measured_case` for a measurement file) → :func:`run_method` (→ :class:`Outcome`: the
volume, the method's record, the scores against the truth, the wall time) → :func:`plot_case`
(axial/coronal/sagittal panels) and :func:`write_case` (an HDF5 file with the case's attributes).
``ctblend demo``, ``ctblend recon`` and ``ctblend bench`` all go this way.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

import operators as ops
from ctblend.figures import PanelFigure, plot_panels
from ctblend.geometry_config import Acquisition, Measurements, write_arrays
from ctblend.metrics import uncertainty_scores, volume_scores

from .configs import MethodConfig
from .methods import method_config, reconstruct
from .volumes import DEFAULT_WINDOW_HU, VolumeInput, hu_window

__all__ = [
    "UNITS",
    "Case",
    "Outcome",
    "measured_case",
    "plot_case",
    "run_method",
    "simulate_case",
    "write_case",
]

UNITS = "(HU + 1024) / 4095"


@dataclass(frozen=True)
class Case:
    """One measured volume: measurements ``y`` (``A.range_shape``) of the acquisition, the truth
    ``A.domain_shape`` in [0, 1] (None when unknown), the voxel spacing and a description of the
    source (``source``, ``z_range``)."""

    acquisition: Acquisition
    A: ops.Operator
    y: Tensor
    truth: Tensor | None
    spacing_mm: tuple[float, float, float]
    described: dict[str, Any] = field(default_factory=dict)

    def attrs(self) -> dict[str, Any]:
        """File attributes of the case: its source, acquisition, volume shape and units."""
        shape = tuple(self.A.domain_shape)
        return {
            **self.described,
            **self.acquisition.to_attrs(shape),
            "volume_shape": list(shape),
            "units": UNITS,
        }


def simulate_case(
    volume: VolumeInput,
    acquisition: Acquisition,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Case:
    """Measure ``volume`` (on ``device``) under ``acquisition``; noise drawn from ``seed``."""
    truth = torch.from_numpy(volume.x).to(device)
    A = acquisition.operator(truth.shape)
    y = acquisition.simulate(A, truth, pixel_mm=volume.spacing_mm[1], seed=seed)
    described = {"source": volume.source, "z_range": list(volume.z_range)}
    return Case(acquisition, A, y, truth, volume.spacing_mm, described)


def measured_case(
    measurements: Measurements, source: str | os.PathLike, device: torch.device | str = "cpu"
) -> Case:
    """The case of a measurement file (``ctblend simulate``'s output) read from ``source``."""
    acq = measurements.acquisition
    truth = measurements.truth
    return Case(
        acq,
        acq.operator(measurements.volume_shape),
        torch.from_numpy(measurements.sinogram).to(device),
        None if truth is None else torch.from_numpy(np.asarray(truth)),
        measurements.spacing_mm,
        {"source": measurements.attrs.get("source", str(source))},
    )


@dataclass(frozen=True)
class Outcome:
    """A reconstruction ``x`` (CPU float32, not clipped), the method's record, its scores against
    the truth (None without one), the wall time of the reconstruction and, for K > 1 posterior
    samples, their per-voxel standard deviation ``std`` (x is then their mean)."""

    x: Tensor
    record: dict
    scores: dict[str, float] | None
    seconds: float
    std: Tensor | None = None


class _Progress:
    """A progress bar opened at the first step, so that input errors come before any bar."""

    def __init__(self, total: int | None, label: str | None):
        self.total, self.label, self.bar = total, label, None

    def tick(self, *_: Any) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.total, desc=self.label, unit="step", leave=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_method(
    case: Case,
    method: str,
    prior: Any = None,
    config: MethodConfig | Mapping[str, Any] | None = None,
    *,
    progress: str | None = None,
    monitor: contextlib.AbstractContextManager | None = None,
) -> Outcome:
    """Reconstruct ``case`` with ``method`` and score it. ``progress``: the label of a progress
    bar over the method's steps (None: no bar); ``monitor`` is entered around the
    reconstruction alone (the benchmark's peak-memory probe)."""
    cfg = method_config(method, config)
    bar = _Progress(cfg.steps, progress)
    callback = bar.tick if progress is not None and cfg.steps else None
    start = time.perf_counter()
    try:
        with monitor or contextlib.nullcontext():
            x, record = reconstruct(method, case.y, case.A, prior, cfg, callback=callback)
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    x = x.detach().float().cpu()
    std = record.pop("std", None)
    std = None if std is None else std.detach().float().cpu()
    scores = None
    if case.truth is not None:
        scores = volume_scores(x, case.truth)
        if std is not None:
            scores.update(uncertainty_scores(x, std, case.truth))
    return Outcome(x, record, scores, seconds, std)


def plot_case(
    case: Case,
    volumes: Mapping[str, Tensor],
    path: str | os.PathLike,
    title: str,
    psnr: Mapping[str, float] | None = None,
    window_hu: tuple[float, float] = DEFAULT_WINDOW_HU,
    std: Mapping[str, Tensor] | None = None,
) -> PanelFigure:
    """Panels of the truth (when known) and ``volumes`` in the HU window ``window_hu``, with
    uncertainty rows for the volumes that have a posterior ``std``."""
    truth = {} if case.truth is None else {"ground truth": case.truth.cpu()}
    return plot_panels(
        {**truth, **volumes},
        path,
        window=hu_window(*window_hu),
        spacing=case.spacing_mm,
        title=title,
        psnr=psnr,
        std=std,
    )


def write_case(
    path: str | os.PathLike, case: Case, arrays: Mapping[str, Any], attrs: Mapping[str, Any]
) -> None:
    """``arrays`` in one HDF5 file (atomically) with the case's attributes and ``attrs``."""
    write_arrays(path, arrays, spacing_mm=case.spacing_mm, attrs={**attrs, **case.attrs()})
