"""Markdown table of the ablation arms' validation ε-MSE (``val.csv`` of each run folder).

python benchmarks/training_ablation/table.py runs/ablation
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def main(folder: Path) -> None:
    print("| arm | steps | wall s | val ε-MSE mean | t = 50 | t = 200 | t = 500 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for run in sorted(p for p in folder.iterdir() if (p / "val.csv").is_file()):
        with (run / "val.csv").open(newline="") as f:
            last = list(csv.DictReader(f))[-1]
        cells = [last[k] for k in ("step", "wall_time_s", "val_mean", "val_t50", "val_t200")]
        print(f"| {run.name} | " + " | ".join(cells + [last["val_t500"]]) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/ablation"))
