"""Resume: a run killed (SIGKILL) after a checkpoint and resumed ends bit-identical to an
uninterrupted run (CPU, deterministic mode)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

RUN = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from ctblend.training import BlobDataset, load_config, train

    out, kill_at = sys.argv[1], int(sys.argv[2])
    cfg = load_config(
        "tiny", image_size=16, batch_size=4, warmup_steps=3, log_every=2, checkpoint_every=3,
        phases=[{"steps": 5, "crop": 8}, {"steps": 4}], deterministic=True,
        unet={**load_config("tiny").unet.to_dict(), "dropout": 0.1},
    )

    def kill(info):
        if info.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    train(cfg, BlobDataset(24, 16), out, progress=False, callbacks=[kill])
    """
)


def _run(script: Path, out: Path, kill_at: int) -> int:
    return subprocess.run(
        [sys.executable, str(script), str(out), str(kill_at)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    ).returncode


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    ckpt = run / "checkpoints" / "step_00000009"
    tensors = {f"ema.{k}": v for k, v in load_file(ckpt / "weights.safetensors").items()}
    tensors.update(
        {f"model.{k}": v for k, v in load_file(ckpt / "state/model.safetensors").items()}
    )
    tensors.update(
        {f"opt.{k}": v for k, v in load_file(ckpt / "state/optimizer.safetensors").items()}
    )
    return tensors


def test_killed_run_resumes_bit_identically(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RUN)
    # 9 steps over a crop phase and a full-size phase, dropout on, 24 samples → several epochs.
    assert _run(script, tmp_path / "straight", kill_at=-1) == 0
    # Killed during step 4 (after checkpoint 3, in the crop phase), resumed and killed during
    # step 8 (after checkpoint 6, in the full-size phase), resumed to the end.
    killed = tmp_path / "killed"
    assert _run(script, killed, kill_at=4) == -signal.SIGKILL
    assert (killed / "latest").read_text().strip() == "checkpoints/step_00000003"
    assert _run(script, killed, kill_at=8) == -signal.SIGKILL
    assert (killed / "latest").read_text().strip() == "checkpoints/step_00000006"
    assert _run(script, killed, kill_at=-1) == 0

    straight = _final_state(tmp_path / "straight")
    assert len(straight) > 50
    resumed = _final_state(killed)
    assert resumed.keys() == straight.keys()
    differing = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"
    losses = [
        [r["loss"] for r in csv.DictReader((run / "loss.csv").open())]
        for run in (tmp_path / "straight", killed)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 5
    # No staging folders are left behind.
    assert not list((killed / "checkpoints").glob(".tmp_*"))
