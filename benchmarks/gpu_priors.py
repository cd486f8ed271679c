"""Train the 2D and the DiffusionBlend++ priors on one GPU within a time budget (issue 16).

One command for a lent GPU machine: the ``gpu128`` preset (7.4 M parameters, bf16, batches of
64) trains ``slice2d`` for ``--budget-s`` seconds, then ``blend++`` for as long again (from
scratch: the transfer rule lost to scratch for blend++ in the CPU ablation, docs/training.md;
``--transfer`` starts it from the 2D run instead), and writes, under ``--out``,
only what must come back (7 files, each under 16 MB): the two priors in fp16 (config.json +
weights.safetensors), their validation curves and a JSON summary. Run folders with optimiser
state stay in ``--work``. Nothing else depends on it; ``--tiny`` runs the same path on the CPU
in seconds (the test suite does, so it cannot rot).

    python benchmarks/gpu_priors.py --data ../shared/data/ct --out "$OUT" --budget-s 210
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from ctblend.training import export_weights, load_config, train
from ctblend.training.data import training_datasets, training_files


def train_one(kind: str, args: argparse.Namespace, work: Path, init_from: Path | None) -> dict:
    """Train ``kind`` for the budget, export fp16 to ``out``, return its summary row."""
    overrides = {"kind": kind, "time_budget_s": args.budget_s}
    if init_from is not None:
        overrides["init_from"] = str(init_from)
    if args.tiny:
        overrides |= {
            "image_size": 32,
            "phases": [{"steps": 6, "crop": None}],
            "batch_size": 4,
            "device": "cpu",
            "checkpoint_every": 3,
            "holdout": 0.3,
            "val_samples": 2,
            "num_workers": 0,
            "precision": "fp32",
        }
    config = load_config("tiny" if args.tiny else args.config, **overrides)
    files = training_files([args.data])
    dataset, validation = training_datasets(config, files)
    run = work / kind.replace("+", "p")
    start = time.perf_counter()
    result = train(config, dataset, run, progress=False, validation=validation)
    name = f"{'blendpp' if kind == 'blend++' else kind}_{args.config}"
    export_weights(result.checkpoint, args.out / name, dtype="float16")
    shutil.copy(run / "val.csv", args.out / f"{name}_val.csv")
    return {
        "kind": kind,
        "name": name,
        "steps": result.steps,
        "wall_s": round(time.perf_counter() - start, 1),
        "last_loss": result.last_loss,
        "init_from": None if init_from is None else "the slice2d run above",
        "config": config.to_dict(),
        "checkpoint": str(result.checkpoint),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="CT folder (MANIFEST train split)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the files to keep")
    parser.add_argument("--work", type=Path, help="run folders (default: a temporary folder)")
    parser.add_argument("--config", default="gpu128", help="training preset or YAML")
    parser.add_argument("--budget-s", type=float, default=210.0, help="seconds per prior")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run at 32², seconds")
    parser.add_argument("--transfer", action="store_true", help="start blend++ from the 2D run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        rows = [train_one("slice2d", args, work, None)]
        source = Path(rows[0]["checkpoint"]) if args.transfer else None
        rows.append(train_one("blend++", args, work, source))
    (args.out / "gpu_priors.json").write_text(json.dumps(rows, indent=1))
    for row in rows:
        print(f"{row['name']}: {row['steps']} steps in {row['wall_s']} s, loss {row['last_loss']}")


if __name__ == "__main__":
    main()
