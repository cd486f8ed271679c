"""The loss log of a run: ``loss.csv`` (one row per logging window) and ``loss.png``."""

from __future__ import annotations

import csv
import os
from pathlib import Path

COLUMNS = ("step", "loss", "lr", "samples_per_s", "crop", "wall_time_s")


class LossLog:
    """Appends rows to ``path``; on resume, rows after the checkpoint step are dropped."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = self.read(path) if path.is_file() else []
        kept = [r for r in rows if int(r["step"]) <= resume_step]
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, path)

    def append(self, **row) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)

    @staticmethod
    def read(path: Path) -> list[dict[str, str]]:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))


def plot_loss_curve(csv_path: Path, png_path: Path) -> None:
    """Loss against step (log scale) with a moving average and, when the run has a ``val.csv``
    beside ``csv_path``, the validation ε-MSE; written atomically."""
    import numpy as np
    from matplotlib.figure import Figure

    rows = LossLog.read(csv_path)
    if not rows:
        return
    steps = np.array([int(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(steps, loss, lw=0.8, alpha=0.5, label="loss (per log window)")
    width = max(1, len(loss) // 20)
    if width > 1:
        smooth = np.convolve(loss, np.ones(width) / width, mode="valid")
        ax.plot(steps[width - 1 :], smooth, lw=1.5, label=f"moving average ({width})")
    val_path = csv_path.with_name("val.csv")
    val = LossLog.read(val_path) if val_path.is_file() else []
    if val:
        ax.plot(
            [int(r["step"]) for r in val],
            [float(r["val_mean"]) for r in val],
            "o-",
            lw=1.5,
            ms=3,
            label="validation ε-MSE (held-out slab, fixed noise)",
        )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("ε-MSE")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, png_path)
