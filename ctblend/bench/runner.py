"""Run (or resume) the cells of a benchmark and write its tables."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ctblend.bench.config import ABLATIONS, DEFAULT_ABLATION, BenchConfig
from ctblend.bench.inputs import Priors, bench_acquisitions, load_source, resolve_volumes
from ctblend.bench.memory import PeakMemory
from ctblend.bench.records import (
    Cell,
    blank_row,
    json_safe,
    load_cell,
    reconstruction_path,
)
from ctblend.bench.tables import write_panel, write_tables
from ctblend.io import write_hdf5
from ctblend.io.output import check_writable, single_writer, write_text
from ctblend.pipeline import PRIOR_OF_METHOD
from ctblend.pipeline.configs import DiffusionBlendPPConfig
from ctblend.pipeline.run import Case, run_method, simulate_case
from ctblend.runtime import describe_machine, machine_info, resolve_device
from ctblend.training import distributed

log = logging.getLogger("ctblend.bench")


def cell_method_config(method: str, ablation: str, seed: int, config: BenchConfig) -> dict:
    """The keyword options ``reconstruct`` gets for one cell (part of its fingerprint)."""
    if method == "sirt":
        return {"iterations": config.sirt_iterations}
    if method == "tv":
        return {"lam": config.tv_lam, "iterations": config.tv_iterations}
    if method in PRIOR_OF_METHOD:
        cfg: dict[str, Any] = {"seed": seed}
        if config.nfe is not None:
            cfg["nfe"] = config.nfe
        if config.samples > 1:
            cfg["samples"] = config.samples
        cfg.update(ABLATIONS.get(ablation, {}))
        return cfg
    return {}


def cell_plan(config: BenchConfig) -> Iterator[tuple[str, str]]:
    """(method, ablation) pairs in table order; an ablation equal to the default cell (e.g.
    ``nfe=200`` when the run's NFE is 200) is the default row and is not run twice."""
    for method in config.methods:
        yield method, DEFAULT_ABLATION
    default = cell_method_config("diffusionblend++", DEFAULT_ABLATION, 0, config)
    default_nfe = default.get("nfe", DiffusionBlendPPConfig.nfe)
    for ablation in config.ablations:
        changed = cell_method_config("diffusionblend++", ablation, 0, config)
        if {**default, "nfe": default_nfe} != {**changed, "nfe": changed.get("nfe", default_nfe)}:
            yield "diffusionblend++", ablation


def run_bench(config: BenchConfig) -> list[dict]:
    """Run (or resume) every cell of ``config``; write the tables; return the rows.

    Under ``torchrun`` (gloo on CPU, NCCL on GPU) the ranks share the cells, each computed once
    (cell i by rank i mod world size); when every rank is done, rank 0 reads them all back and
    writes the tables. Other ranks return the rows they computed.
    """
    out = check_writable(config.out_dir)
    ctx = distributed.setup(config.device)
    try:  # one bench per folder: rank 0 holds it (the other ranks of the job write into it too)
        with single_writer(out) if ctx.is_main else contextlib.nullcontext():
            if not ctx.distributed:
                return _run_cells(config, _owner(0, 1), tables=True)
            mine = _run_cells(config, _owner(ctx.rank, ctx.world_size), tables=False)
            distributed.barrier(ctx)
            rows = mine
            if ctx.is_main:
                rows = _run_cells(config, _owner(0, 1), tables=True, cached_only=True)
            distributed.barrier(ctx)
            return rows
    finally:
        distributed.teardown(ctx)


def _owner(rank: int, world: int):
    """Whether this rank computes the i-th cell of the run."""
    return lambda index: index % world == rank


def _run_cells(config: BenchConfig, owns, tables: bool, cached_only: bool = False) -> list[dict]:
    """The cells this process ``owns`` (by their index in the run); ``tables``: write the
    tables and panels; ``cached_only``: read cells back, never compute one (a cell missing
    then is one another rank could not finish)."""
    out = Path(config.out_dir)
    device = resolve_device(config.device)
    machine = machine_info(device)
    description = describe_machine(machine)
    acquisitions = bench_acquisitions(config)
    sources = resolve_volumes(config.volumes, config.ct_dir)
    priors = Priors(config, device)
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs resolved
    if tables:
        config.to_yaml(out / "bench.yaml")
    rows: list[dict] = []
    volume_info: dict[str, dict] = {}
    notes: list[str] = []
    index = 0
    for source in sources:
        volume = load_source(source, config)
        volume_info[source.name] = {
            "shape": list(volume.x.shape),
            "spacing_mm": [round(s, 4) for s in volume.spacing_mm],
            "path": str(source.path) if source.path else "procedural phantom (seed 0)",
        }
        for name, acquisition in acquisitions:
            for seed in config.seeds:
                case = simulate_case(volume, acquisition, seed, device)
                for method, ablation in cell_plan(config):
                    cell = Cell(source.name, name, method, ablation, seed)
                    if owns(index):
                        run = run_cell(
                            config,
                            out,
                            cell,
                            case,
                            priors,
                            device,
                            description,
                            cached_only=cached_only,
                        )
                        rows.append(run)
                    index += 1
                if tables:
                    panel = Cell(source.name, name, "all", DEFAULT_ABLATION, seed)
                    notes += write_panel(
                        config, out, panel, volume.x, volume.spacing_mm, rows,
                        acquisition.describe(),
                    )  # fmt: skip
        if tables:
            write_tables(config, out, rows, machine, volume_info, notes)
    if tables:
        write_tables(config, out, rows, machine, volume_info, notes)
    return rows


def run_cell(
    config: BenchConfig,
    out: Path,
    cell: Cell,
    case: Case,
    priors: Priors,
    device: torch.device,
    machine: str,
    cached_only: bool = False,
) -> dict:
    """One cell: reconstruct ``case`` (or skip it, or read it back from its cell file;
    ``cached_only``: never reconstruct, a missing cell file is a failed row)."""
    key, method, seed = cell.key, cell.method, cell.seed
    shape = tuple(case.A.domain_shape)
    base = {
        **dataclasses.asdict(cell),
        "shape": "x".join(str(s) for s in shape),
        "scale": config.scale_name,
        "voxel_mm": round(case.spacing_mm[1], 4),
    }
    if method == "fbp-unet" and case.acquisition.is_3d:
        skip = "skipped: 2D-only (FBP-UNet refines 2D FBP slices; this acquisition is 3D)"
        return blank_row(**base, status=skip, machine=machine)
    prior, prior_label, skip = priors.get(method, cell.protocol)
    if skip is not None:
        log.info("%s: %s", key, skip)
        return blank_row(**base, status=skip, machine=machine)
    method_config = cell_method_config(method, cell.ablation, seed, config)
    fingerprint = {
        "shape": list(shape),
        "scale": config.scale_name,
        "z_range": config.z_range,
        "geometry": str(case.A.proj_geom),
        "config": method_config,
        "prior": prior_label,
    }
    cell_path = out / "cells" / f"{key}.json"
    cached = load_cell(cell_path, fingerprint)
    if cached is not None:
        log.info("%s: done earlier, skipped", key)
        return cached
    if cached_only:
        status = "failed: its rank left no result (see that rank's log)"
        return blank_row(**base, status=status, machine=machine)
    log.info("%s: running", key)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    memory = PeakMemory()
    try:
        result = run_method(case, method, prior, method_config, monitor=memory)
    except (ValueError, RuntimeError) as exc:
        log.exception("%s failed", key)
        status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return blank_row(**base, status=status, machine=machine)
    x, record, scores = result.x.clamp(0.0, 1.0), result.record, result.scores
    row = blank_row(
        **base,
        **scores,
        status="done",
        seconds=round(result.seconds, 3),
        nfe=int(record.get("nfe") or 0),
        peak_mem_mb=round(memory.peak_mb, 1),
        gpu_peak_mb=(
            round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            if device.type == "cuda"
            else None
        ),
        prior=prior_label or None,
        config=json_safe(record.get("config", method_config)),
        machine=machine,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if config.save_volumes:
        write_hdf5(
            reconstruction_path(out, cell),
            x.to("cpu", torch.float16),
            dataset="recon",
            attrs={"cell": key, "units": "protocol units [0, 1], clipped"},
        )
    log.info(
        "%s: done in %.1f s, PSNR axial %.2f / coronal %.2f / sagittal %.2f dB",
        key,
        result.seconds,
        scores["axial_psnr"],
        scores["coronal_psnr"],
        scores["sagittal_psnr"],
    )
    record_json = {k: v for k, v in record.items() if k != "config"}
    stored = {"row": row, "fingerprint": fingerprint, "record": record_json}
    write_text(cell_path, json.dumps(json_safe(stored), indent=1) + "\n")
    return json_safe(row)
