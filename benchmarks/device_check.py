"""GPU readiness in one command: every CUDA path of the project, timed, with a JSON + Markdown
summary. ``--tiny`` runs the same code on the CPU at toy sizes in well under a minute (the test
suite does, so that it cannot rot).

    python benchmarks/device_check.py --out device_check      # on one GPU, about 6 minutes
    python benchmarks/device_check.py --tiny --out /tmp/dc    # CPU plumbing check

Sections (each one's failure is recorded and the others still run):
  env     versions, device, ASTRA (with or without CUDA)
  pytest  the ``gpu`` marker tests (tests/test_operators_gpu.py)
  ops     every backend × geometry on the device: dot test, agreement with the float64 CPU
          result, gradient on the device, operator under autocast
  thru2d  FP+BP throughput of a stack of slices at 8 and 360 views: torch_sparse against
          ASTRA (CUDA on a GPU), as a ratio
  cone3d  cone-beam FP/BP of an N³ volume: raymarch (and ASTRA CUDA 3D where available)
  train   a short training run per prior kind (bf16 on a GPU) in steps per second
  recon   DiffusionBlend++ with the shipped 128² prior: seconds per NFE
  ddp     two ranks under torchrun (gloo), and on a GPU a one-rank NCCL all-reduce
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import operators as ops
from operators.backends.astra import astra_available, astra_cuda_available

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("env", "pytest", "ops", "thru2d", "cone3d", "train", "recon", "ddp")


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one mode."""

    ops_n: int
    thru_slices: int
    thru_n: int
    thru_views: tuple[int, ...]
    cone_n: int
    cone_views: int
    cone_det: int
    train_size: int
    train_steps: int
    recon_slices: int
    recon_nfe: int
    subprocess_timeout_s: int


FULL = Sizes(64, 256, 256, (8, 360), 256, 360, 384, 128, 30, 100, 10, 240)
TINY = Sizes(12, 4, 32, (8, 30), 12, 8, 16, 16, 2, 3, 2, 240)


class Skip(Exception):
    """The section does not apply here (e.g. no ASTRA CUDA); not a failure."""


def _timed(fn: Callable[[], object], repeats: int = 1) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs, synchronising CUDA."""
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def env(device: torch.device, sizes: Sizes) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "astra": astra_available(),
        "astra_cuda": astra_cuda_available(),
    }
    if info["astra"]:
        import astra

        info["astra_version"] = astra.__version__
    return info


def _run(cmd: list[str], sizes: Sizes) -> dict:
    done = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=sizes.subprocess_timeout_s
    )
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited {done.returncode}: {tail[0]}")
    return {"summary": tail[0]}


def run_pytest(device: torch.device, sizes: Sizes) -> dict:
    return _run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_operators_gpu.py"], sizes
    )


def _geometries(n: int) -> dict:
    """backend → {geometry name: (volume, projection geometry)} at size ``n``."""
    det = 2 * n
    two_d = {
        "parallel": ops.parallel(n, det),
        "fan_flat": ops.fan_flat(n, det, 1.5, 2.0 * n, 1.0 * n),
        "fan_arc": ops.fan_arc(n, det, 1.5, 2.0 * n, 1.0 * n),
    }
    three_d = {
        "parallel3d": ops.parallel3d(n, (n, det)),
        "cone": ops.cone(n, (n, det), 1.5, 2.0 * n, 1.0 * n),
    }
    vol2, vol3 = ops.volume((n, n)), ops.volume((n // 2, n, n))
    cells = {("torch_sparse", k): (vol2, g) for k, g in two_d.items()}
    cells |= {("raymarch", k): (vol3, g) for k, g in three_d.items()}
    cells |= {("astra", k): (vol2, g) for k, g in two_d.items() if k != "fan_arc"}
    if astra_cuda_available():
        cells |= {("astra", k): (vol3, g) for k, g in three_d.items()}
    return cells


def run_ops(device: torch.device, sizes: Sizes) -> dict:
    """Each cell against the float64 CPU result of an exactly matched backend (torch_sparse in
    2D, raymarch in 3D); ASTRA's own kernels (line_fanflat, CUDA) differ from those by a few
    per cent on random images."""
    results, failures = {}, []
    for (backend, name), (vol, pg) in _geometries(sizes.ops_n).items():
        if backend == "astra" and not astra_available():
            continue
        reference = ops.Operator(vol, pg, backend="torch_sparse" if pg.ndim == 2 else "raymarch")
        A = ops.Operator(vol, pg, backend=backend)
        dtype = torch.float32 if backend == "astra" else torch.float64
        x = torch.rand(2, *A.domain_shape, dtype=torch.float64)
        expected = reference(x)
        on_device = A(x.to(device, dtype)).cpu().double()
        diff = torch.linalg.vector_norm(on_device - expected) / torch.linalg.vector_norm(expected)
        xg = x.to(device, torch.float32).requires_grad_(True)
        A(xg).square().sum().backward()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            cast = A(x.to(device, torch.float32))
        cell = {
            "dot_test": ops.dot_test(A, dtype, device=device),
            "rel_diff_to_cpu": float(diff),
            "grad_on_device": xg.grad is not None and xg.grad.device == device,
            "autocast_dtype": str(cast.dtype).replace("torch.", ""),
        }
        loose = backend == "astra"
        ok = cell["grad_on_device"] and cell["autocast_dtype"] == "float32"
        ok &= cell["rel_diff_to_cpu"] < (1e-1 if loose else 1e-6)  # ASTRA: other kernels
        ok &= cell["dot_test"] < (1e-2 if loose and device.type == "cuda" else 1e-5)
        if not ok:
            failures.append(f"{backend}/{name}")
        results[f"{backend}/{name}"] = cell
    if failures:
        raise RuntimeError(f"checks failed for {', '.join(failures)}: {json.dumps(results)[:400]}")
    return results


def run_thru2d(device: torch.device, sizes: Sizes) -> dict:
    n, z = sizes.thru_n, sizes.thru_slices
    x = torch.rand(z, n, n, device=device)
    astra_ok = astra_cuda_available() if device.type == "cuda" else astra_available()
    out = {}
    for views in sizes.thru_views:
        vol, pg = ops.volume((z, n, n)), ops.parallel(views, 2 * n)
        row = {}
        for backend in ("torch_sparse", "astra") if astra_ok else ("torch_sparse",):
            A = ops.Operator(vol, pg, backend=backend)
            A.T(A(x))  # set-up: matrix build, projector creation
            row[f"{backend}_s"] = _timed(lambda A=A: A.T(A(x)), repeats=3)
        if "astra_s" in row:
            row["astra_over_torch_sparse"] = row["astra_s"] / row["torch_sparse_s"]
        out[f"{views}_views"] = row
    return out


def run_cone3d(device: torch.device, sizes: Sizes) -> dict:
    n, views, det = sizes.cone_n, sizes.cone_views, sizes.cone_det
    vol = ops.volume((n, n, n))
    pg = ops.cone(views, (det, det), 1.5 * n / det, 2.0 * n, 1.0 * n)
    x = torch.rand(n, n, n, device=device)
    out = {"shape": f"{n}³ × {views} views × {det}²"}
    backends = (
        ("raymarch", "astra") if device.type == "cuda" and astra_cuda_available() else ("raymarch",)
    )
    for backend in backends:
        A = ops.Operator(vol, pg, backend=backend)
        y = A(x)
        out[f"{backend}_fp_s"] = _timed(lambda A=A: A(x))
        out[f"{backend}_bp_s"] = _timed(lambda A=A, y=y: A.T(y))
        if device.type == "cuda":
            out[f"{backend}_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    fdk = ops.fdk(ops.Operator(vol, pg, backend=backends[-1]), y)
    out["fdk_finite"] = bool(torch.isfinite(fdk).all())
    return out


def run_train(device: torch.device, sizes: Sizes) -> dict:
    from ctblend.training import BlobDataset, load_config, train

    out = {}
    precision = "bf16" if device.type == "cuda" else "fp32"
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("slice2d", "blend", "blend++"):
            cfg = load_config(
                "tiny",
                kind=kind,
                image_size=sizes.train_size,
                batch_size=4,
                warmup_steps=1,
                checkpoint_every=sizes.train_steps,
                phases=[{"steps": sizes.train_steps, "crop": None}],
                device=str(device),
                precision=precision,
            )
            data = BlobDataset(16 * sizes.train_steps, sizes.train_size, kind=kind)
            start = time.perf_counter()
            result = train(cfg, data, Path(tmp) / kind.replace("+", "p"), progress=False)
            wall = time.perf_counter() - start
            if not np.isfinite(result.last_loss):
                raise RuntimeError(f"{kind}: the loss is {result.last_loss}")
            out[kind] = {"steps_per_s": result.steps / wall, "last_loss": result.last_loss}
    out["precision"] = precision
    return out


def run_recon(device: torch.device, sizes: Sizes) -> dict:
    from ctblend.data.phantom import ct_phantom
    from ctblend.pipeline import reconstruct
    from ctblend.priors.loading import load_prior

    prior = load_prior(REPO / "ctblend" / "weights" / "blendpp_cpu128", device=device)
    z = sizes.recon_slices
    x = torch.tensor(ct_phantom((z, 128, 128)), dtype=torch.float32, device=device)
    A = ops.Operator(ops.volume((z, 128, 128)), ops.parallel(8, 256))
    y = A(x)
    start = time.perf_counter()
    rec, record = reconstruct("diffusionblend++", y, A, prior, nfe=sizes.recon_nfe)
    wall = time.perf_counter() - start
    if not bool(torch.isfinite(rec).all()):
        raise RuntimeError("the reconstruction has NaN or inf")
    psnr = float(10 * torch.log10(1 / torch.mean((rec.clamp(0, 1) - x) ** 2)))
    return {"slices": z, "nfe": record["nfe"], "s_per_nfe": wall / record["nfe"], "psnr_db": psnr}


def run_ddp(device: torch.device, sizes: Sizes) -> dict:
    out = _run(
        [sys.executable, "-m", "pytest", "-q", "tests/test_training_ddp.py", "-k", "torchrun_two"],
        sizes,
    )
    if device.type == "cuda":
        import torch.distributed as dist

        store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True)
        dist.init_process_group("nccl", store=store, rank=0, world_size=1)
        try:
            t = torch.ones(4, device=device)
            dist.all_reduce(t)
            out["nccl_all_reduce"] = float(t.sum())
        finally:
            dist.destroy_process_group()
    return out


RUNNERS: dict[str, Callable[[torch.device, Sizes], dict]] = {
    "env": env,
    "pytest": run_pytest,
    "ops": run_ops,
    "thru2d": run_thru2d,
    "cone3d": run_cone3d,
    "train": run_train,
    "recon": run_recon,
    "ddp": run_ddp,
}


def check(sections: list[str], device: torch.device, sizes: Sizes) -> list[dict]:
    """Run ``sections`` in order; each records ok / skip / fail, seconds and its details."""
    rows = []
    for name in sections:
        start = time.perf_counter()
        try:
            row = {"section": name, "status": "ok", "details": RUNNERS[name](device, sizes)}
        except Skip as exc:
            row = {"section": name, "status": "skip", "details": {"reason": str(exc)}}
        except Exception as exc:  # noqa: BLE001 - a failure is a result here
            row = {
                "section": name,
                "status": "fail",
                "details": {"error": f"{type(exc).__name__}: {exc}"[:500]},
                "trace": traceback.format_exc()[-2000:],
            }
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        print(f"{name}: {row['status']} ({row['seconds']} s)", flush=True)
    return rows


def markdown(rows: list[dict], device: torch.device, sizes: Sizes, tiny: bool) -> str:
    lines = [
        f"# Device check: {device} ({'tiny CPU mode' if tiny else 'full'})",
        "",
        f"Command: `python benchmarks/device_check.py{' --tiny' if tiny else ''}`. Sizes: "
        f"`{json.dumps(asdict(sizes))}`.",
        "",
        "| section | status | seconds | details |",
        "|---|---|---|---|",
    ]
    for r in rows:
        details = json.dumps(r["details"], default=str)
        lines.append(f"| {r['section']} | {r['status']} | {r['seconds']} | `{details[:600]}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and Markdown")
    parser.add_argument("--tiny", action="store_true", help="CPU, toy sizes (the suite runs it)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; expected some of {SECTIONS}")
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; use --tiny (or --device cpu) for the CPU check")
    sizes = TINY if args.tiny else FULL
    rows = check(sections, device, sizes)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"device": str(device), "tiny": args.tiny, "sizes": asdict(sizes), "sections": rows}
    (args.out / "device_check.json").write_text(json.dumps(summary, indent=1, default=str))
    (args.out / "device_check.md").write_text(markdown(rows, device, sizes, args.tiny))
    return 1 if any(r["status"] == "fail" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
