"""``load_prior`` behaves as the CLI: shipped names from any directory, precision "auto"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctblend.priors.loading import CheckpointError, load_prior

SCRIPT = (
    "from ctblend.priors import load_prior\n"
    "p = load_prior('blendpp_cpu128', kind='blend++')\n"
    "print(p.kind, p.image_size, p.net.options.precision, p.net.options.channels_last)\n"
)


def _native_bf16() -> bool:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in text or "amx_bf16" in text


def test_a_shipped_name_loads_from_any_directory_in_the_cli_precision(tmp_path):
    """From an empty folder (no ctblend/ below it); "auto" = bf16 + channels-last exactly
    where the CPU flags say native bf16, as ``ctblend recon --precision auto``."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    native = _native_bf16()
    assert proc.stdout.split() == ["blend++", "128", "bf16" if native else "fp32", str(native)]


def test_explicit_precision_and_unknown_names():
    assert load_prior("blendpp_cpu128", precision="fp32").net.options.precision == "fp32"
    with pytest.raises(CheckpointError, match=r"no_such_prior: no such .*shipped: .*blendpp_"):
        load_prior("no_such_prior")
    with pytest.raises(CheckpointError, match="an FBP-UNet network .* not a diffusion prior"):
        load_prior("fbpunet_cpu128_svct8")
