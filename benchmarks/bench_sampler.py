"""Seconds per NFE and peak memory of the diffusion methods; writes docs/benchmarks/sampler.*

Uses the ``cpu128`` UNet (3.3 M parameters) with the shipped weights when present, else
random weights (timing does not depend on the weights). Measures, in one run on one machine:
every diffusion method at Z slices × 128², 8 views; DiffusionBlend++ against Z; against the
group batch size; and the inference options (fp32 reference, channels-last, bf16 autocast)
with the relative ε error of each against fp32. (``torch.compile`` recompiles for every new
group-batch shape on CPU and was far slower here, so it is not a variant.)

    python benchmarks/bench_sampler.py            # Z = 100, 3 NFE per cell
    python benchmarks/bench_sampler.py --quick    # tiny, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

import operators as ops
from ctblend.diffusion import VPSchedule
from ctblend.models.unet import UNet
from ctblend.pipeline import reconstruct
from ctblend.priors.base import InferenceOptions
from ctblend.priors.blend import BlendPrior
from ctblend.priors.blendpp import BlendPPPrior
from ctblend.priors.slice2d import Slice2DPrior
from ctblend.runtime import cpu_has_bf16, describe_machine, machine_info
from ctblend.training import load_config

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
PRIORS = {
    "diffusionblend++": (BlendPPPrior, "blend++"),
    "diffusionblend": (BlendPrior, "blend"),
    "dds": (Slice2DPrior, "slice2d"),
    "dds2d": (Slice2DPrior, "slice2d"),
}


def _prior(method: str, size: int, options: InferenceOptions, tiny: bool):
    cls, kind = PRIORS[method]
    unet_cfg = load_config("tiny" if tiny else "cpu128").unet
    cfg = unet_cfg.for_kind(kind)
    torch.manual_seed(0)
    net = UNet(cfg).eval()
    for p in net.parameters():  # random non-zero weights: the zero-initialised output is too kind
        p.data.normal_(0, 0.02)
    if cls is BlendPPPrior:
        return cls(net, size, VPSchedule(), options=options)
    return cls(net, size, VPSchedule(), options)


def run_one(
    method: str, z: int, size: int, nfe: int, group_batch: int, variant: str, tiny: bool
) -> dict:
    options = InferenceOptions(
        group_batch=group_batch,
        precision="bf16" if "bf16" in variant else "fp32",
        channels_last="channels_last" in variant,
    )
    prior = _prior(method, size, options, tiny)
    A = ops.Operator(ops.volume((z, size, size)), ops.parallel(8, 2 * size))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(z, size, size, generator=g)
    y = A(x)
    reconstruct(method, y, A, prior, nfe=1)  # warm-up (matrix build)
    start = time.perf_counter()
    _, record = reconstruct(method, y, A, prior, nfe=nfe)
    seconds = time.perf_counter() - start
    xt = torch.randn(z, size, size, generator=g)
    reference = _prior(method, size, InferenceOptions(group_batch=group_batch), tiny)
    eps_ref = reference.eps(xt, 500, 0, torch.Generator().manual_seed(1))
    eps = prior.eps(xt, 500, 0, torch.Generator().manual_seed(1))
    rel = float(torch.linalg.vector_norm(eps - eps_ref) / torch.linalg.vector_norm(eps_ref))
    return {
        "method": method,
        "slices": z,
        "size": size,
        "group_batch": group_batch,
        "variant": variant,
        "seconds_per_nfe": seconds / nfe,
        "prior_seconds_per_nfe": record["prior_seconds"] / nfe,
        "dc_seconds_per_nfe": record["dc_seconds"] / nfe,
        "eps_rel_error_vs_fp32": rel,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nfe", type=int, default=3)
    parser.add_argument("--one", nargs=5, metavar=("METHOD", "Z", "SIZE", "GROUP_BATCH", "VARIANT"))
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    if args.one:
        method, z, size, gb, variant = args.one
        print(
            json.dumps(run_one(method, int(z), int(size), args.nfe, int(gb), variant, args.quick))
        )
        return 0
    z, size = (9, 32) if args.quick else (100, 128)
    cells = [(m, z, size, 16, "fp32") for m in PRIORS]
    z_values = (12, 24) if args.quick else (64, 128)
    cells += [("diffusionblend++", zz, size, 16, "fp32") for zz in z_values]
    cells += [("diffusionblend++", z, size, gb, "fp32") for gb in (4, 36)]
    cells += [
        ("diffusionblend++", z, size, 16, v)
        for v in ("channels_last", "bf16", "channels_last+bf16")
    ]
    cells += [("diffusionblend++", z, size, gb, "channels_last+bf16") for gb in (4, 8)]
    results = []
    for method, zz, sz, gb, variant in cells:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            method,
            str(zz),
            str(sz),
            str(gb),
            variant,
            "--nfe",
            str(args.nfe),
        ] + (["--quick"] if args.quick else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            reason = done.stderr.strip().splitlines()[-1]
            print(f"cell {method} Z={zz} {variant} failed: {reason}")
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    write(results, args.out, args.quick, args.nfe)
    return 0


def write(results: list[dict], out: Path, quick: bool, nfe: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    name = "sampler_quick" if quick else "sampler"
    lines = [
        "# Sampler speed: seconds per network evaluation (NFE)",
        "",
        f"Machine: {describe_machine()} (AVX512-BF16/AMX: {'yes' if cpu_has_bf16() else 'no'}). "
        "Command: `python benchmarks/bench_sampler.py"
        f"{' --quick' if quick else ''}`; {nfe} NFE per cell after a 1-NFE warm-up, 8 parallel "
        "views, 5 CG iterations per step, UNet `cpu128` (3.3 M parameters) with random weights. "
        "Each cell runs in a fresh process; peak RSS is that whole process. ε error: relative L2 "
        "distance of the variant's ε to the fp32 reference on the same noisy volume.",
        "",
        "| method | slices | group batch | variant | s/NFE | prior s/NFE | DC s/NFE | 50 NFE s "
        "| ε error vs fp32 | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['method']} | {r['slices']} | {r['group_batch']} | {r['variant']} | "
            f"{r['seconds_per_nfe']:.2f} | {r['prior_seconds_per_nfe']:.2f} | "
            f"{r['dc_seconds_per_nfe']:.3f} | {50 * r['seconds_per_nfe']:.0f} | "
            f"{r['eps_rel_error_vs_fp32']:.1e} | {r['peak_rss_mib']:.0f} |"
        )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}.json").write_text(
        json.dumps({"machine": machine_info(), "results": results}, indent=1)
    )
    print(f"wrote {out / (name + '.md')}")


if __name__ == "__main__":
    raise SystemExit(main())
