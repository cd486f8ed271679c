"""Figures (matplotlib, Agg canvas, no pyplot state): orthogonal panels, sinograms, loss curves.

Volumes are ``(Z, H, W)`` in the axis convention of :mod:`ctblend.io` (z inferior → superior,
rows anterior → posterior, columns right → left). Axial slices are drawn as in a radiology
viewer; coronal and sagittal slices with the head at the top. Every file is written to a
temporary name and renamed, so a figure on disk is always complete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from skimage.metrics import peak_signal_noise_ratio

from ctblend.io.output import atomic_path

__all__ = [
    "CT_UNITS",
    "PLANES",
    "PanelFigure",
    "ct_value_label",
    "plot_loss_curve",
    "plot_panels",
    "plot_sinogram",
]

PLANES = ("axial", "coronal", "sagittal")
MIN_RATIO = 0.3
#: The units of ctblend volumes, x = (HU + 1024) / 4095 (``ctblend.data.scaling``).
CT_UNITS = "(HU + 1024) / 4095"
HU_PER_UNIT, HU_AT_ZERO = 4095.0, -1024.0


def ct_value_label(window: tuple[float, float]) -> str:
    """Colorbar label of a grey window in CT units: the units and the window in HU."""
    low, high = (HU_AT_ZERO + HU_PER_UNIT * float(w) for w in window)
    return f"{CT_UNITS}; window {low:.0f} to {high:.0f} HU"


@dataclass(frozen=True)
class PanelFigure:
    """What :func:`plot_panels` drew: the figure, its file, the image axes by
    ``(row, column key)`` (rows ``axial``, ``coronal``, ``sagittal`` and ``<plane> error``),
    the z-profile axes and the slice indices ``(z, y, x)`` used."""

    figure: Figure
    path: Path
    axes: dict[tuple[str, str], Axes]
    profile: Axes
    slices: tuple[int, int, int]


def _as_array(name: str, value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 3 or min(array.shape) < 1:
        raise ValueError(f"volume {name!r} has shape {array.shape}; expected (Z, H, W)")
    return array


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> Path:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(path)


def _plane(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The image of ``plane`` through ``index``: axial (H, W), coronal (Z, W), sagittal (Z, H)."""
    if plane == "axial":
        return volume[index]
    if plane == "coronal":
        return volume[:, index, :]
    return volume[:, :, index]


def _check_slices(slices, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if slices is None:
        return (shape[0] // 2, shape[1] // 2, shape[2] // 2)
    if len(slices) != 3:
        raise ValueError(f"slices {slices!r}; expected three indices (z, y, x)")
    out = tuple(int(s) for s in slices)
    for name, index, n in zip("zyx", out, shape, strict=True):
        if not 0 <= index < n:
            raise ValueError(f"slice index {name}={index} outside the volume (size {n})")
    return out


def plot_panels(
    volumes: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    truth_key: str = "ground truth",
    window: tuple[float, float] = (0.0, 1.0),
    slices: Sequence[int] | None = None,
    *,
    spacing: Sequence[float] | None = None,
    error_window: float | None = None,
    title: str | None = None,
    psnr: Mapping[str, float] | None = None,
    value_label: str | None = None,
    std: Mapping[str, np.ndarray] | None = None,
    dpi: int = 100,
) -> PanelFigure:
    """Axial / coronal / sagittal rows × one column per volume, written as a PNG to ``path``.

    volumes: name → ``(Z, H, W)`` (numpy or torch), all of one shape, drawn in dict order with
    one grey ``window`` (vmin, vmax). When ``truth_key`` is among them, three rows of signed error
    maps (volume − truth, symmetric window ``±error_window``, default a fifth of the grey window)
    follow, each labelled "<plane> error", and column titles give the *volume* PSNR (over
    all voxels, so titled "volume PSNR"): the caller's ``psnr[name]`` (so the figure prints the
    number of the caller's table), else computed here (clipped to [0, 1], data range 1). The
    last row plots every volume along z through the (y, x) crossing of the coronal and sagittal
    planes (marked on the first column). ``slices``: (z, y, x) indices of the three planes
    (default: the centre). ``spacing``: voxel size (dz, dy, dx) for the aspect ratios.
    ``value_label``: the grey colorbar's label (default: the CT units and the window in HU,
    :func:`ct_value_label`; volumes are in those units). ``std``: name → ``(Z, H, W)``
    per-voxel posterior standard deviation of that column's volume (the mean of K samples);
    three "<plane> std" rows (uncertainty maps, same planes, one colour scale from 0) follow.
    """
    if not volumes:
        raise ValueError("plot_panels: no volumes given; expected name → (Z, H, W) arrays")
    arrays = {str(k): _as_array(str(k), v) for k, v in volumes.items()}
    shapes = {k: a.shape for k, a in arrays.items()}
    shape = next(iter(shapes.values()))
    if len(set(shapes.values())) > 1:
        raise ValueError(f"plot_panels: volumes of different shapes {shapes}; expected one shape")
    vmin, vmax = (float(w) for w in window)
    if not vmax > vmin:
        raise ValueError(f"window {window!r}; expected (vmin, vmax) with vmax > vmin")
    z, y, x = _check_slices(slices, shape)
    dz, dy, dx = (1.0, 1.0, 1.0) if spacing is None else (float(s) for s in spacing)
    truth = arrays.get(truth_key)
    keys = list(arrays)
    compared = [k for k in keys if k != truth_key] if truth is not None else []
    err = float(error_window) if error_window is not None else (vmax - vmin) / 5.0

    stds = {str(k): _as_array(f"std of {k}", v) for k, v in (std or {}).items()}
    unknown = [k for k in stds if k not in arrays or stds[k].shape != shape]
    if unknown:
        raise ValueError(f"plot_panels: std for {unknown}; expected volumes' names and shape")
    rows = list(PLANES) + ([f"{p} error" for p in PLANES] if compared else [])
    rows += [f"{p} std" for p in PLANES] if stds else []
    std_top = max((float(np.percentile(a, 99.5)) for a in stds.values()), default=0.0) or 1e-6
    index = {"axial": z, "coronal": y, "sagittal": x}
    extent = {  # physical (height, width) of each plane's image
        "axial": (shape[1] * dy, shape[2] * dx),
        "coronal": (shape[0] * dz, shape[2] * dx),
        "sagittal": (shape[0] * dz, shape[1] * dy),
    }
    pixels = {"axial": shape[1:], "coronal": (shape[0], shape[2]), "sagittal": shape[:2]}
    # thin slabs are stretched along z to at least MIN_RATIO of the width, to stay readable
    ratio = {p: max(h / w, MIN_RATIO if p != "axial" else 0.0) for p, (h, w) in extent.items()}
    aspect = {p: ratio[p] * pixels[p][1] / pixels[p][0] for p in PLANES}
    ratios = [ratio[r.split()[0]] for r in rows]
    ratios.append(0.9)
    col_w = 2.3
    fig = Figure(figsize=(col_w * len(keys) + 1.2, col_w * sum(ratios) + 0.8), layout="constrained")
    grid = fig.add_gridspec(len(rows) + 1, len(keys), height_ratios=ratios)
    axes: dict[tuple[str, str], Axes] = {}
    image_artist = error_artist = std_artist = None
    for r, row in enumerate(rows):
        plane = row.split()[0]
        for c, key in enumerate(keys):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            axes[(row, key)] = ax
            origin = "upper" if plane == "axial" else "lower"
            if row in PLANES:
                img = _plane(arrays[key], plane, index[plane])
                image_artist = ax.imshow(
                    img, cmap="gray", vmin=vmin, vmax=vmax, origin=origin, aspect=aspect[plane]
                )
            elif row.endswith(" std"):
                if key not in stds:
                    ax.set_axis_off()
                    continue
                std_artist = ax.imshow(
                    _plane(stds[key], plane, index[plane]),
                    cmap="magma", vmin=0.0, vmax=std_top, origin=origin, aspect=aspect[plane],
                )  # fmt: skip
            elif key == truth_key:
                ax.set_axis_off()
                continue
            else:
                diff = _plane(arrays[key], plane, index[plane]) - _plane(truth, plane, index[plane])
                error_artist = ax.imshow(
                    diff, cmap="RdBu_r", vmin=-err, vmax=err, origin=origin, aspect=aspect[plane]
                )
            first_shown = next(k for k in keys if k in stds) if row.endswith(" std") else None
            if c == 0 or (row not in PLANES and key in (first_shown or compared[0],)):
                axis = {"axial": "z", "coronal": "y", "sagittal": "x"}[plane]
                where = f"{axis} = {index[plane]}" if row in PLANES else row.split()[1]
                ax.set_ylabel(f"{plane}\n{where}", fontsize=8)
            if r == 0:
                label = key
                if key in compared:
                    value = (psnr or {}).get(key)
                    if value is None:
                        value = peak_signal_noise_ratio(
                            truth, np.clip(arrays[key], 0, 1), data_range=1.0
                        )
                    label += f"\nvolume PSNR {value:.2f} dB"
                ax.set_title(label, fontsize=10)
    first = keys[0]
    axes[("axial", first)].plot([x], [y], marker="+", color="tab:orange", markersize=10)
    axes[("coronal", first)].axvline(x, color="tab:orange", lw=0.8, alpha=0.8)
    axes[("sagittal", first)].axvline(y, color="tab:orange", lw=0.8, alpha=0.8)
    fig.colorbar(
        image_artist,
        ax=[axes[(p, k)] for p in PLANES for k in keys],
        shrink=0.6,
        label=value_label or ct_value_label((vmin, vmax)),
    )
    if error_artist is not None:
        units = "" if value_label else f" ({CT_UNITS}; ±{err:.3g} = ±{HU_PER_UNIT * err:.0f} HU)"
        fig.colorbar(
            error_artist,
            ax=[axes[(f"{p} error", k)] for p in PLANES for k in compared],
            shrink=0.6,
            label=f"volume − truth{units}",
        )
    if std_artist is not None:
        units = (
            "" if value_label else f" ({CT_UNITS}; {std_top:.3g} = {HU_PER_UNIT * std_top:.0f} HU)"
        )
        fig.colorbar(
            std_artist,
            ax=[axes[(f"{p} std", k)] for p in PLANES for k in stds],
            shrink=0.6,
            label=f"posterior std{units}",
        )
    profile = fig.add_subplot(grid[len(rows), :])
    positions = np.arange(shape[0]) * dz
    for key in keys:
        is_truth = key == truth_key and truth is not None
        profile.plot(
            positions,
            arrays[key][:, y, x],
            color="black" if is_truth else None,
            lw=2.0 if is_truth else 1.2,
            label=key,
        )
    profile.set_xlabel("z (mm)" if spacing is not None else "z (slice)")
    profile.set_ylabel(f"value at (y={y}, x={x})")
    profile.grid(alpha=0.3)
    profile.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0))  # off the curves
    if title:
        fig.suptitle(title)
    saved = _save(fig, path, dpi)
    return PanelFigure(fig, saved, axes, profile, (z, y, x))


def plot_sinogram(
    sinogram, path: str | os.PathLike, slice_index: int | None = None, title: str | None = None
) -> Figure:
    """Sinogram view: views × detector bins of one slice (default the middle one) and, for a
    ``(Z, V, D)`` stack, the first view's projection over z. Written as a PNG to ``path``."""
    y = _as_array("sinogram", sinogram[None] if np.ndim(sinogram) == 2 else sinogram)
    z = y.shape[0] // 2 if slice_index is None else int(slice_index)
    if not 0 <= z < y.shape[0]:
        raise ValueError(f"slice_index {z} outside the sinogram's {y.shape[0]} slices")
    stack = y.shape[0] > 1
    fig = Figure(figsize=(10 if stack else 6, 3.6), layout="constrained")
    ax = fig.add_subplot(1, 2 if stack else 1, 1)
    im = ax.imshow(y[z], cmap="gray", aspect="auto", interpolation="nearest")
    ax.set_xlabel("detector bin")
    ax.set_ylabel("view")
    ax.set_title(f"sinogram of slice {z} ({y.shape[1]} views)")
    fig.colorbar(im, ax=ax, label="line integral")
    if stack:
        ax2 = fig.add_subplot(1, 2, 2)
        im2 = ax2.imshow(y[:, 0, :], cmap="gray", aspect="auto", origin="lower")
        ax2.set_xlabel("detector bin")
        ax2.set_ylabel("slice z")
        ax2.set_title("view 0 over all slices")
        fig.colorbar(im2, ax=ax2, label="line integral")
    if title:
        fig.suptitle(title)
    _save(fig, path, dpi=100)
    return fig


def plot_loss_curve(csv_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """The loss curve of a training run's ``loss.csv`` (see ``ctblend.training``) as a PNG."""
    from ctblend.training.losslog import LossLog
    from ctblend.training.losslog import plot_loss_curve as _plot

    csv_path, path = Path(csv_path), Path(path)
    if not csv_path.is_file():
        raise ValueError(f"{csv_path}: not found; expected the loss.csv of a training run")
    if not LossLog.read(csv_path):
        raise ValueError(f"{csv_path}: no rows yet; expected at least one logged step")
    path.parent.mkdir(parents=True, exist_ok=True)
    _plot(csv_path, path)
    return path
