"""benchmarks/device_check.py in its tiny CPU mode, so that the GPU check cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _device_check(out: Path, sections: str) -> dict:
    done = subprocess.run(
        [sys.executable, "benchmarks/device_check.py", "--tiny", "--out", str(out)]
        + ["--sections", sections],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = json.loads((out / "device_check.json").read_text())
    assert done.returncode == 0, json.dumps(summary, indent=1)[-3000:]
    assert (out / "device_check.md").read_text().startswith("# Device check: cpu")
    return summary


def test_tiny_device_check_runs_the_operator_and_model_sections(tmp_path):
    """The sections whose code lives only in the script (pytest and ddp run suite tests)."""
    summary = _device_check(tmp_path, "env,ops,thru2d,cone3d,train,recon")
    assert [s["section"] for s in summary["sections"]] == [
        "env",
        "ops",
        "thru2d",
        "cone3d",
        "train",
        "recon",
    ]
    assert all(s["status"] == "ok" for s in summary["sections"])


@pytest.mark.slow
def test_tiny_device_check_runs_every_section(tmp_path):
    summary = _device_check(tmp_path, "env,pytest,ops,thru2d,cone3d,train,recon,ddp")
    assert {s["status"] for s in summary["sections"]} == {"ok"}
