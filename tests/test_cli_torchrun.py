"""Batch reconstruction under ``torchrun --nproc_per_node 2 -m ctblend recon --inputs DIR``."""

from __future__ import annotations

import re

import h5py
import numpy as np
import torch
from conftest import torchrun

import operators as ops
from ctblend.data.phantom import ct_phantom
from ctblend.io import write_hdf5

NAMES = ("a", "b", "c")


def torchrun_recon(cwd) -> str:
    proc = torchrun(
        "-m", "ctblend", "recon", "--inputs", "vols", "--protocol", "svct8", "--scale", "32",
        "--method", "fbp", "--out", "out", "--quiet", cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def written(stdout: str) -> dict[str, list[str]]:
    """output file name → ranks that wrote it, from the ``[rank r/2] wrote …`` lines."""
    out: dict[str, list[str]] = {}
    for rank, name in re.findall(r"\[rank (\d)/2\] wrote out/(\S+\.h5)", stdout):
        out.setdefault(name, []).append(rank)
    return out


def test_two_ranks_shard_the_volumes_write_each_once_and_resume(tmp_path):
    vols = tmp_path / "vols"
    vols.mkdir()
    truths = {}
    for seed, name in enumerate(NAMES):
        truths[name] = ct_phantom((4, 32, 32), seed=seed)
        hu = truths[name] * 4095 - 1024
        write_hdf5(vols / f"{name}.h5", hu.astype(np.float32), spacing_mm=(2.5, 12.5, 12.5))
    (vols / "notes.txt").write_text("not a volume: ignored")

    first = written(torchrun_recon(tmp_path))
    assert first == {"a_fbp.h5": ["0"], "b_fbp.h5": ["1"], "c_fbp.h5": ["0"]}
    A = ops.Operator(ops.volume((4, 32, 32)), ops.parallel(8, 64))
    for name in NAMES:
        x = torch.from_numpy(truths[name])
        with h5py.File(tmp_path / "out" / f"{name}_fbp.h5", "r") as f:
            np.testing.assert_allclose(f["recon"][...], ops.fbp(A, A(x)).numpy(), atol=2e-4)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.h5")}

    (tmp_path / "out" / "b_fbp.h5").unlink()  # resume: only the missing output is computed
    again = torchrun_recon(tmp_path)
    assert written(again) == {"b_fbp.h5": ["1"]}
    assert sorted(re.findall(r"skip out/(\S+\.h5)", again)) == ["a_fbp.h5", "c_fbp.h5"]
    for name in ("a_fbp.h5", "c_fbp.h5"):
        assert (tmp_path / "out" / name).stat().st_mtime_ns == stamps[name]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{n}_fbp.h5" for n in NAMES] + [f"{n}_fbp.png" for n in NAMES]
    )
