"""The operator tests run without ASTRA: only the tests that need ASTRA skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_without_astra_only_astra_tests_skip(tmp_path):
    fake = tmp_path / "astra"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError('astra hidden by the test', name='astra')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}
    files = ["tests/test_operators_operator.py", "tests/test_operators_geometry.py"]
    selection = "dot_test_torch_sparse or dot_test_astra or vector_form_matches_astra"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", selection]
        + files,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-2000:]
    assert " passed" in summary and " skipped" in summary, summary  # both kinds ran
    skips = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("astra" in line.lower() for line in skips), skips
