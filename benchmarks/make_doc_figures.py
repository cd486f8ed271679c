"""Draw the figures of docs/methods.md and docs/results.md into docs/img/ (repository root).

    python benchmarks/make_doc_figures.py [--out docs/img] [--slices 18]
        [--bench runs/bench_cpu128 --ct-dir ../shared/data/ct --cell VOLUME PROTOCOL ...]

``partitions.png``: which 3-slice groups DiffusionBlend++ evaluates at a step — the adjacency
partition for offsets s = 0, 1, 2 and the cross partition — computed by
``ctblend.priors.partitions`` itself, so the picture is what the sampler does.
``results_<volume>_<protocol>.png`` (with ``--bench``): axial/coronal/sagittal panels of the
ground truth and the stored reconstructions of a ``ctblend bench`` folder, at a size for the docs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ctblend.priors.partitions import Partition, adjacency_partition, cross_partition

RESULT_METHODS = ("fbp", "fbp-unet", "tv", "dds2d", "dds", "diffusionblend", "diffusionblend++")


def draw_partitions(num_slices: int, path: Path) -> Path:
    """One row per partition; one box per group spanning its slices (filled where it writes)."""
    rows: list[tuple[str, Partition]] = [
        (f"adjacency, s = {s} (label 1)", adjacency_partition(num_slices, s)) for s in range(3)
    ]
    rows.append(("cross (label 3)", cross_partition(num_slices)))
    colours = [f"C{k}" for k in range(10)]
    fig = Figure(
        figsize=(0.42 * num_slices + 2.8, 1.0 + 0.95 * sum(len(p.groups) > 0 for _, p in rows))
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = 0.0
    ticks = []
    for name, partition in rows:
        height = 0.8 / max(1, _max_overlap(partition))
        level: dict[int, int] = {}
        for g, group in enumerate(partition.groups):
            lane = _free_lane(level, group.indices)
            colour = colours[g % len(colours)]
            for idx, writes in zip(group.indices, group.writes, strict=True):
                ax.add_patch(
                    Rectangle(
                        (idx + 0.08, y + lane * height + 0.04),
                        0.84,
                        height - 0.08,
                        facecolor=colour if writes else "white",
                        edgecolor=colour,
                        hatch=None if writes else "//",
                        lw=1.2,
                    )
                )
            ax.plot(
                [i + 0.5 for i in group.indices],
                [y + lane * height + height / 2] * 3,
                color="black",
                lw=0.6,
                marker="o",
                ms=2.5,
            )
        ticks.append((y + 0.4, name))
        y += 1.0
    ax.set_xlim(0, num_slices)
    ax.set_ylim(y, -0.1)
    ax.set_xticks([i + 0.5 for i in range(num_slices)], [str(i) for i in range(num_slices)])
    ax.set_yticks([t for t, _ in ticks], [n for _, n in ticks])
    ax.set_xlabel("slice index z (filled: ε written from this group; hatched: read only)")
    ax.set_title(f"DiffusionBlend++ partitions of Z = {num_slices} slices")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    return path


def _max_overlap(partition: Partition) -> int:
    level: dict[int, int] = {}
    return max((_free_lane(level, g.indices) for g in partition.groups), default=0) + 1


def _free_lane(level: dict[int, int], indices: tuple[int, int, int]) -> int:
    """The lowest lane where the span of ``indices`` is free; marks it taken."""
    lo, hi = min(indices), max(indices)
    lane = 0
    while any(level.get((lane, z), False) for z in range(lo, hi + 1)):
        lane += 1
    for z in range(lo, hi + 1):
        level[(lane, z)] = True
    return lane


def draw_results(bench: Path, ct_dir: str, volume: str, protocol: str, path: Path) -> Path:
    """Panels of the truth and every stored default reconstruction of (volume, protocol)."""
    from ctblend.bench import BenchConfig, load_volume, resolve_volumes
    from ctblend.bench.records import Cell, read_reconstructions
    from ctblend.figures import plot_panels

    config = BenchConfig.from_yaml(bench / "bench.yaml")
    (source,) = resolve_volumes((volume,), ct_dir)
    truth, spacing = load_volume(source, config)
    panel = Cell(volume, protocol, "all", "default", 0)
    volumes = {"ground truth": truth, **read_reconstructions(bench, panel, RESULT_METHODS)}
    plot_panels(
        volumes,
        path,
        window=(0.0, 0.6),
        spacing=spacing,
        title=f"{volume}, {protocol} ({bench.name})",
        dpi=55,
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--slices", type=int, default=18)
    parser.add_argument("--bench", type=Path, help="a ctblend bench output folder")
    parser.add_argument("--ct-dir", default="../shared/data/ct")
    parser.add_argument("--cell", nargs=2, action="append", metavar=("VOLUME", "PROTOCOL"))
    args = parser.parse_args()
    print(draw_partitions(args.slices, args.out / "partitions.png"))
    for volume, protocol in args.cell or []:
        name = f"results_{volume}_{protocol}.png"
        print(draw_results(args.bench, args.ct_dir, volume, protocol, args.out / name))


if __name__ == "__main__":
    main()
