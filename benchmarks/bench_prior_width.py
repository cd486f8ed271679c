"""Network size at equal reconstruction time: seconds per ε of a volume, per prior and width.

DiffusionBlend++ calls its network once per 3 slices, DDS once per slice, so a wider 3-slice
network can cost as much per NFE as the DDS one. This measures, in one process on one thread,
the seconds of one ε evaluation of a (Z, 128, 128) volume (``VolumePrior.eps``, what every
sampling step calls) for the DDS 2D network at the shipped width and for DiffusionBlend++ at
several widths (random weights: timing does not depend on them), in the default precision.
Writes docs/benchmarks/prior_width.{md,json}.

    OMP_NUM_THREADS=1 python benchmarks/bench_prior_width.py --slices 102
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ctblend.models.unet import UNet, UNetConfig, count_parameters
from ctblend.priors.base import InferenceOptions, precision_options
from ctblend.priors.loading import PriorSpec, build_prior
from ctblend.runtime import describe_machine, machine_info

REPO = Path(__file__).resolve().parents[1]
#: (label, kind, UNet fields): the shipped cpu128 width, the gpu128 preset's, one between.
NETWORKS = (
    ("DDS 2D, cpu128 (shipped)", "slice2d", dict(base_channels=32, channel_mults=(1, 2, 2, 4))),
    ("DB++ cpu128 (shipped)", "blend++", dict(base_channels=32, channel_mults=(1, 2, 2, 4))),
    (
        "DB++ base 48",
        "blend++",
        dict(base_channels=48, channel_mults=(1, 2, 2, 4), head_channels=48, norm_groups=16),
    ),
    ("DB++ base 64", "blend++", dict(base_channels=64, channel_mults=(1, 2, 2, 2))),
)


def seconds_per_eps(kind: str, unet: dict, slices: int, repeats: int, precision: str) -> dict:
    common = dict(num_res_blocks=1, attention_levels=(3,), head_channels=32, norm_groups=32)
    cfg = UNetConfig(**{**common, **unet}).for_kind(kind)
    net = UNet(cfg).eval()
    prior = build_prior(
        net,
        PriorSpec(kind=kind, image_size=128, unet=cfg),
        None,
        InferenceOptions(**precision_options(precision)),
    )
    x = torch.randn(slices, 128, 128)
    prior.eps(x, 500, 0, torch.Generator().manual_seed(0))  # warm-up
    start = time.perf_counter()
    for k in range(repeats):
        prior.eps(x, 500, k + 1, torch.Generator().manual_seed(k))
    return {
        "parameters": count_parameters(net),
        "seconds_per_eps": (time.perf_counter() - start) / repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=102, help="Z (the test volume has 102)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "prior_width")
    args = parser.parse_args()
    rows = []
    for label, kind, unet in NETWORKS:
        row = {
            "network": label,
            "kind": kind,
            **seconds_per_eps(kind, unet, args.slices, args.repeats, args.precision),
        }
        rows.append(row)
        print(f"{label}: {row['parameters'] / 1e6:.2f} M, {row['seconds_per_eps']:.2f} s per ε")
    dds = rows[0]["seconds_per_eps"]
    machine = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {"machine": machine, "slices": args.slices, "precision": args.precision, "rows": rows},
            indent=1,
        )
        + "\n"
    )
    lines = [
        "# Network size at equal reconstruction time",
        "",
        f"`benchmarks/bench_prior_width.py --slices {args.slices}`: seconds of one ε evaluation of "
        f"a {args.slices}×128×128 volume (the network part of one NFE), precision "
        f"`{args.precision}`, one process. Machine: {describe_machine(machine)}.",
        "",
        "| network | kind | parameters | s per ε | ratio to DDS |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['network']} | {r['kind']} | {r['parameters'] / 1e6:.2f} M "
        f"| {r['seconds_per_eps']:.2f} | {r['seconds_per_eps'] / dds:.2f} |"
        for r in rows
    ]
    lines += [
        "",
        "DDS also runs its ADMM TV-z step per NFE, which these times leave out, so a "
        "ratio ≤ 1 here means the 3-slice network costs no more than DDS's per NFE.",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
