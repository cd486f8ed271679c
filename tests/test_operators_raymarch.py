"""raymarch: sample points made chunk by chunk within a memory budget, rays clipped to the box."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

import operators as ops

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_peak_memory_stays_within_the_budget():
    """Construction + FP + BP of a 32³ cone scan (40 views of 48²) in a fresh process: the
    memory beyond the input follows ``memory_budget``, not the number of sample points."""
    budget = 32 * 2**20
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_operator_costs.py",
            "raymarch",
            "32x40x48",
            "--one",
            "--budget",
            str(budget),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    cell = json.loads(done.stdout.strip().splitlines()[-1])
    assert cell["extra_mib"] < 5 * budget / 2**20, cell


def test_chunking_does_not_change_the_result():
    vg, pg = ops.volume((10, 12, 14)), ops.cone(9, (14, 22), 1.2, 40.0, 20.0)
    whole = ops.Operator(vg, pg, backend="raymarch")
    small = ops.Operator(vg, pg, backend="raymarch", memory_budget=2**16)
    x = torch.rand(2, *vg.shape, dtype=torch.float64)
    y = torch.rand(2, *whole.range_shape, dtype=torch.float64)
    torch.testing.assert_close(small(x), whole(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(small.T(y), whole.T(y), rtol=1e-12, atol=1e-12)
    assert ops.dot_test(small, torch.float64, batch=2) <= 1e-10


def test_parallel_rays_are_clipped_to_the_box_of_an_elongated_volume():
    """A uniform slab seen edge-on: every ray through it has the slab's thickness of ones."""
    vg = ops.volume((4, 8, 40), spacing=1.0)  # 40 mm along x, 8 along y
    A = ops.Operator(vg, ops.parallel3d([0.0], (2, 24)), backend="raymarch")  # rays along +y
    x = torch.zeros(vg.shape, dtype=torch.float64)
    x[:, 1:-1, 1:-1] = 1.0  # keep clear of the zero padding at the border
    y = A(x)[:, 0]
    torch.testing.assert_close(y[:, 4:20], torch.full((2, 16), 6.0, dtype=torch.float64))
