"""The loss log of a run: ``loss.csv`` (one row per logging window) and ``loss.png``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ctblend.io.output import atomic_path, write_text

COLUMNS = ("step", "loss", "lr", "samples_per_s", "crop", "wall_time_s")


def write_csv(path: Path, columns, rows: list[dict]) -> None:
    """``rows`` under a header of ``columns`` in ``path``, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(columns))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


class LossLog:
    """Appends rows to ``path``; on resume, rows after the checkpoint step are dropped."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = self.read(path) if path.is_file() else []
        kept = [r for r in rows if int(r["step"]) <= resume_step]
        write_csv(path, COLUMNS, kept)

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
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
