"""One writer per output (issue 26): two real processes on one ``--out``, exactly one succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from ctblend.io import DataError
from ctblend.io.output import single_writer

ENV = {**os.environ, "CI": "true", "OMP_NUM_THREADS": "1"}
HOLD = (
    "import sys, time\nfrom ctblend.io.output import single_writer\n"
    "with single_writer(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n"
)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_two_recon_runs_on_one_output_exactly_one_succeeds(tmp_path):
    """The first run holds ``same.h5`` (its lock file exists) while it works: it is stopped
    (SIGSTOP) right then, so the overlap does not depend on timing; the second, started
    meanwhile, fails in one line without touching it; the first, continued, writes its file."""
    ctblend = [sys.executable, "-m", "ctblend"]
    sim = ["simulate", "phantom", "--phantom-slices", "4", "--scale", "32", "--out", "sino.h5"]
    subprocess.run([*ctblend, *sim], cwd=tmp_path, env=ENV, check=True, capture_output=True)
    recon = [*ctblend, "recon", "sino.h5", "--method", "sirt", "--out", "same.h5"]
    first = subprocess.Popen(
        [*recon, "iterations=30"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(tmp_path / ".same.h5.lock", first)
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run(
            [*recon, "iterations=3"], cwd=tmp_path, env=ENV, capture_output=True, text=True
        )
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0 and "wrote same.h5" in out, err
    assert second.returncode == 2 and "wrote" not in second.stdout
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "--out same.h5: another process is writing it now" in lines[0]
    with h5py.File(tmp_path / "same.h5") as f:  # the first run's result, complete
        assert f["recon"].shape == (4, 32, 32) and '"iterations": 30' in f.attrs["config"]
    assert not (tmp_path / ".same.h5.lock").exists()


def test_single_writer_refuses_a_second_process_and_cleans_up(tmp_path):
    out = tmp_path / "new" / "deeper" / "out.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], env=ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError, match=r"out.h5: another process is writing it now"):
            with single_writer(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with single_writer(out):  # the holder's lock died with it
        out.write_text("done")
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.h5"]  # no lock left


def test_single_writer_removes_the_folders_it_made_when_the_work_fails(tmp_path):
    out = tmp_path / "a" / "b" / "out.h5"
    with pytest.raises(RuntimeError), single_writer(out):
        raise RuntimeError("the work failed")
    assert list(tmp_path.iterdir()) == []
