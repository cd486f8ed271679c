"""Throughput of the training datasets: samples per second at 128² and 256², 0 and 2 workers.

Usage::

    python benchmarks/bench_datasets.py [--data-dir ../shared/data/ct] [--items 256]
        [--out docs/benchmarks/datasets]

Reads the train split of ``MANIFEST.md`` in ``--data-dir``; without it, two phantom volumes are
written to a temporary folder. ``FBPPairDataset`` uses an 8-view scikit-image radon/iradon pair as
its FBP callable, so its numbers include that reconstruction. Writes ``<out>.md``, ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skimage.transform import iradon, radon
from torch.utils.data import DataLoader

from ctblend.data.datasets import FBPPairDataset, SliceDataset, SliceGroupDataset, WindowDataset
from ctblend.data.phantom import ct_phantom, phantom_spacing_mm
from ctblend.data.splits import manifest_split
from ctblend.io import write_hdf5
from ctblend.runtime import machine_info

SCALES = ("cpu128", "paper256")
WORKERS = (0, 2)
THETA = np.linspace(0.0, 180.0, 8, endpoint=False)


def skimage_fbp(x: torch.Tensor) -> torch.Tensor:
    """8-view parallel-beam FBP of a ``(1, H, W)`` slice (scikit-image, Ram-Lak)."""
    image = x[0].numpy().astype(np.float64)
    sinogram = radon(image, theta=THETA, circle=False)
    rec = iradon(sinogram, theta=THETA, circle=False, output_size=image.shape[0])
    return torch.from_numpy(rec.astype(np.float32))[None]


def build(name: str, files: list[Path], scale: str, seed: int):
    if name == "SliceGroupDataset":
        return SliceGroupDataset(files, scale=scale, seed=seed, flips=True)
    if name == "SliceDataset":
        return SliceDataset(files, scale=scale, seed=seed, flips=True)
    if name == "WindowDataset":
        return WindowDataset(files, scale=scale, seed=seed, flips=True)
    return FBPPairDataset(files, scale, skimage_fbp, seed=seed)


def measure(dataset, items: int, workers: int, batch_size: int, seed: int) -> float:
    """Samples per second over ``items`` shuffled samples, after one warm-up batch."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
    )
    iterator = iter(loader)
    next(iterator)
    count, start = 0, time.perf_counter()
    for batch in iterator:
        count += len(batch[0])
        if count >= items:
            break
    return count / (time.perf_counter() - start)


def phantom_files(folder: Path) -> list[Path]:
    files = []
    for seed in (0, 1):
        shape = (96, 256, 256)
        hu = np.rint(ct_phantom(shape, seed=seed) * 4095 - 1024).astype(np.int16)
        path = folder / f"phantom{seed}.h5"
        write_hdf5(path, hu, spacing_mm=phantom_spacing_mm(shape), attrs={"source": "phantom"})
        files.append(path)
    return files


def write_report(out: Path, results: list[dict], meta: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "# Dataset throughput",
        "",
        f"Samples per second (batch {meta['batch_size']}, {meta['items']} shuffled samples after "
        f"one warm-up batch, best of {meta['repeats']} runs; a quarter of the samples for "
        f"`FBPPairDataset`) on {meta['machine']['cpu']} ({meta['machine']['cpu_count']} cores, "
        f"1-min load average {meta['machine']['load_average_1min']:.1f} at the start: shared "
        "with other work, so expect noise; torch single-threaded as in DataLoader workers). Data: "
        f"{meta['data']}. Written by `benchmarks/bench_datasets.py`.",
        "",
        "| dataset | scale | 0 workers | 2 workers |",
        "|---|---|---|---|",
    ]
    table = {(r["dataset"], r["scale"], r["workers"]): r["samples_per_s"] for r in results}
    for name in dict.fromkeys(r["dataset"] for r in results):
        for scale in SCALES:
            cells = [f"{table[(name, scale, w)]:.0f}" for w in WORKERS]
            lines.append(f"| {name} | {scale} | {' | '.join(cells)} |")
    lines += [
        "",
        "`FBPPairDataset` includes its FBP callable (8-view scikit-image radon + iradon per item),",
        "which dominates its cost; the others read 1 or 3 gzip slices of 256², map HU to [0, 1],",
        "block-mean to 128² for `cpu128`, and flip at random.",
        "Worker processes only add throughput when the machine has idle cores: with a load",
        "average above the core count (as here), 2 workers add process and transfer overhead",
        "instead. Compare numbers only within one run.",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"
    parser.add_argument("--data-dir", type=Path, default=default_data)
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/datasets"))
    args = parser.parse_args()
    # DataLoader workers run torch single-threaded; do the same in the main process so that the
    # 0-worker numbers measure the data path, not intra-op thread contention in torch.stack.
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        if (args.data_dir / "MANIFEST.md").is_file():
            files = manifest_split(args.data_dir)["train"]
            data = "train split of " + ", ".join(f"`{p.name}`" for p in files)
        else:
            files = phantom_files(Path(tmp))
            data = "two 96-slice phantom volumes (no real data found)"
        results = []
        for name in ("SliceGroupDataset", "SliceDataset", "WindowDataset", "FBPPairDataset"):
            for scale in SCALES:
                for workers in WORKERS:
                    dataset = build(name, files, scale, args.seed)
                    items = args.items // 4 if name == "FBPPairDataset" else args.items
                    rate = max(
                        measure(dataset, items, workers, args.batch_size, args.seed + repeat)
                        for repeat in range(args.repeats)
                    )
                    dataset.close()
                    results.append(
                        {"dataset": name, "scale": scale, "workers": workers, "samples_per_s": rate}
                    )
                    print(f"{name:18s} {scale:9s} workers={workers}: {rate:8.1f} samples/s")
    meta = {
        "items": args.items,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "data": data,
        "machine": machine_info(),
    }
    write_report(args.out, results, meta)


if __name__ == "__main__":
    main()
