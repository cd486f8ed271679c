"""Benchmark outputs: results.md (with a paper-style summary), results.csv, results.json, panels."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ctblend.bench.config import DEFAULT_ABLATION, BenchConfig
from ctblend.bench.memory import MEMORY_NOTE
from ctblend.bench.records import COLUMNS, Cell, json_safe, read_reconstructions
from ctblend.io.output import write_text
from ctblend.metrics import PLANES
from ctblend.pipeline.configs import DiffusionBlendPPConfig
from ctblend.runtime import describe_machine


def write_panel(
    config: BenchConfig,
    out: Path,
    panel: Cell,
    truth: np.ndarray,
    spacing: tuple[float, float, float],
    rows: list[dict],
    described: str | None = None,
) -> list[str]:
    """Axial/coronal/sagittal panels of the ground truth and every finished default cell of
    (volume, protocol, seed) with a stored reconstruction, titled with the acquisition in words
    (``described``); returns notes for the report."""
    if not config.panels:
        return []
    try:
        from ctblend.figures import plot_panels
    except ImportError:
        return ["panels not drawn: ctblend.figures.plot_panels is not available (re-run to draw)"]
    psnr = {
        row["method"]: row["volume_psnr"]
        for row in rows
        if (row["volume"], row["protocol"], row["seed"], row["ablation"], row["status"])
        == (panel.volume, panel.protocol, panel.seed, DEFAULT_ABLATION, "done")
    }
    volumes = {"ground truth": truth, **read_reconstructions(out, panel, list(psnr))}
    if len(volumes) < 2:
        return []
    title = f"{panel.volume}, {described or panel.protocol}, seed {panel.seed}"
    target = out / "panels" / f"{panel.key}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    plot_panels(
        volumes,
        target,
        truth_key="ground truth",
        window=(0, 1),
        spacing=spacing,
        title=title,
        psnr=psnr,
    )
    return []


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def _pm(row: dict, key: str, digits: int) -> str:
    if row.get(key) is None:
        return "–"
    return f"{_fmt(row[key], digits)} ± {_fmt(row[f'{key}_std'], digits)}"


_MD_HEADER = (
    "| protocol | method | ablation | seed | axial PSNR | axial SSIM | coronal PSNR | coronal SSIM "
    "| sagittal PSNR | sagittal SSIM | body PSNR a / c / s | body SSIM a / c / s | volume PSNR "
    "| TV-z (truth) | time s | NFE | peak MB | GPU MB | status |"
)


def _planes(row: dict, metric: str, digits: int) -> str:
    """``a / c / s`` of one metric over the three planes ("–" where missing)."""
    return " / ".join(_fmt(row.get(f"{plane}_{metric}"), digits) for plane in PLANES)


def _md_row(row: dict) -> str:
    tvz = "–" if row.get("tv_z") is None else f"{row['tv_z']:.4f} ({row['tv_z_truth']:.4f})"
    cells = [
        row["protocol"],
        row["method"],
        row["ablation"],
        str(row["seed"]),
        *(
            _pm(row, f"{plane}_{metric}", 2 if metric == "psnr" else 3)
            for plane in PLANES
            for metric in ("psnr", "ssim")
        ),
        _planes(row, "psnr_body", 2),
        _planes(row, "ssim_body", 3),
        _fmt(row.get("volume_psnr"), 2),
        tvz,
        _fmt(row.get("seconds"), 1),
        _fmt(row.get("nfe"), 0) if row.get("nfe") is not None else "–",
        _fmt(row.get("peak_mem_mb"), 0),
        _fmt(row.get("gpu_peak_mb"), 0),
        row["status"],
    ]
    return "| " + " | ".join(cells) + " |"


def _paper_table(volume: str, rows: list[dict], body: bool = False) -> list[str]:
    """Paper-style summary (Tables 1/2): one row per method, per protocol the PSNR and SSIM of
    the axial / coronal / sagittal planes (``body``: inside the body); best PSNR in bold."""
    done = [r for r in rows if r["status"] == "done"]
    suffix = "_body" if body else ""
    if body:
        done = [r for r in done if r.get(f"axial_psnr{suffix}") is not None]
    protocols = list(dict.fromkeys(r["protocol"] for r in done))
    methods = list(dict.fromkeys(r["method"] for r in done))
    if not done:
        return []
    by = {(r["protocol"], r["method"]): r for r in done}

    def score(row: dict, plane: str, metric: str) -> float:
        value = row.get(f"{plane}_{metric}{suffix}")
        return float("-inf") if value is None or value != value else value

    best = {
        (p, plane): max(score(r, plane, "psnr") for (q, _), r in by.items() if q == p)
        for p in protocols
        for plane in PLANES
    }

    def cell(protocol: str, method: str) -> str:
        row = by.get((protocol, method))
        if row is None:
            return "–"
        parts = []
        for plane in PLANES:
            text = _fmt(row.get(f"{plane}_psnr{suffix}"), 2)
            best_here = score(row, plane, "psnr") == best[protocol, plane]
            parts.append(f"**{text}**" if best_here else text)
        ssim = "/".join(_fmt(row.get(f"{plane}_ssim{suffix}"), 3) for plane in PLANES)
        return " / ".join(parts) + f" ({ssim})"

    where = ", inside the body (HU > −500, dilated 3 voxels)" if body else ""
    lines = [
        "",
        f"### {volume}: PSNR axial / coronal / sagittal (SSIM){where}, paper-table layout",
        "",
        "| method | " + " | ".join(protocols) + " |",
        "|---|" + "---|" * len(protocols),
    ]
    lines += [f"| {m} | " + " | ".join(cell(p, m) for p in protocols) + " |" for m in methods]
    return lines


def _uncertainty_table(volume: str, rows: list[dict]) -> list[str]:
    """Calibration of K posterior samples: the mean's PSNR, the mean std inside the body, the
    Spearman correlation of std and |error| there and the fraction of body voxels within ±2 std."""
    done = [r for r in rows if r["status"] == "done" and r.get("std_body") is not None]
    if not done:
        return []
    lines = [
        "",
        f"### {volume}: posterior samples (mean of K; std inside the body)",
        "",
        "| protocol | method | ablation | PSNR a / c / s (mean) | body PSNR a / c / s "
        "| mean std (body) | Spearman(std, abs error) | within ±2 std |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in done:
        cells = [
            r["protocol"],
            r["method"],
            r["ablation"],
            _planes(r, "psnr", 2),
            _planes(r, "psnr_body", 2),
            _fmt(r["std_body"], 4),
            _fmt(r["std_error_spearman"], 3),
            _fmt(r["within_2std"], 3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _markdown(
    config: BenchConfig, rows: list[dict], machine: dict, volume_info: dict, notes: list[str]
) -> str:
    done = sum(r["status"] == "done" for r in rows)
    skipped = sum(str(r["status"]).startswith("skipped") for r in rows)
    failed = sum(str(r["status"]).startswith("failed") for r in rows)
    lines = [
        "# ctblend bench results",
        "",
        f"- machine: {describe_machine(machine)}",
        f"- scale: {config.scale_name} ({config.size}²), z never resampled"
        + (f", slices {config.z_range[0]}:{config.z_range[1]}" if config.z_range else ""),
        f"- seeds: {', '.join(map(str, config.seeds))} (measurement noise and diffusion sampling)",
        f"- cells: {done} done, {skipped} skipped, {failed} failed",
        "- PSNR/SSIM: scikit-image, data range 1, per 2D slice, mean ± std over every slice of "
        "each plane (MSE floored at 1e-10: an exact slice scores 100 dB); reconstructions "
        "clipped to [0, 1]",
        "- body: the same inside the body mask (truth > −500 HU dilated by 3 voxels; slices with "
        "< 50 mask pixels left out)",
        "- TV-z: mean |x[z+1] − x[z]| of the reconstruction (of the ground truth in brackets)",
        f"- time: wall-clock seconds of the reconstruction; {MEMORY_NOTE}",
    ]
    lines += [f"- note: {n}" for n in dict.fromkeys(notes)]
    for volume, info in volume_info.items():
        main = [r for r in rows if r["volume"] == volume and r["ablation"] == DEFAULT_ABLATION]
        ablation_rows = [
            r
            for r in rows
            if r["volume"] == volume
            and r["method"] == "diffusionblend++"
            and (r["ablation"] != DEFAULT_ABLATION or config.ablations)
        ]
        shape = "×".join(map(str, info["shape"]))
        lines += [
            "",
            f"## {volume} ({shape}, spacing {info['spacing_mm']} mm)",
            "",
            f"Source: `{info['path']}`",
            "",
            _MD_HEADER,
            "|" + "---|" * _MD_HEADER.count(" | ") + "---|",
        ]
        lines += [_md_row(r) for r in main]
        lines += _paper_table(volume, main)
        lines += _paper_table(volume, main, body=True)
        lines += _uncertainty_table(volume, [r for r in rows if r["volume"] == volume])
        if config.ablations:
            lines += [
                "",
                f"### diffusionblend++ ablations on {volume} (default: adjacency + cross, "
                f"cross every 2nd step, {config.nfe or DiffusionBlendPPConfig.nfe} NFE)",
                "",
                _MD_HEADER,
                "|" + "---|" * _MD_HEADER.count(" | ") + "---|",
            ]
            lines += [_md_row(r) for r in ablation_rows]
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: json.dumps(row.get(k)) if isinstance(row.get(k), (dict, list)) else row.get(k)
                for k in COLUMNS
            }
        )
    return buffer.getvalue()


def write_tables(
    config: BenchConfig,
    out: Path,
    rows: list[dict],
    machine: dict,
    volume_info: dict,
    notes: list[str],
) -> None:
    write_text(out / "results.md", _markdown(config, rows, machine, volume_info, notes))
    write_text(out / "results.csv", _csv_text(rows))
    payload = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "memory": MEMORY_NOTE,
        "config": config.to_dict(),
        "volumes": volume_info,
        "notes": list(dict.fromkeys(notes)),
        "columns": list(COLUMNS),
        "rows": [json_safe({k: r.get(k) for k in COLUMNS}) for r in rows],
    }
    write_text(out / "results.json", json.dumps(payload, indent=1) + "\n")
