"""torchrun with 2 processes (gloo on CPU): ranks see different samples, agree on weights."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest
import torch
from conftest import torchrun
from safetensors.torch import load_file

from ctblend.priors import load_prior
from ctblend.training import BlobDataset, load_config, train

pytestmark = pytest.mark.usefixtures("one_thread")


WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from safetensors.torch import save_file
    from ctblend.training import BlobDataset, load_config, train

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    cfg = load_config("tiny", image_size=16, batch_size=3, warmup_steps=1, log_every=1,
                      checkpoint_every=1, phases=[{"steps": 2, "crop": 8}], device="cpu")
    seen = []
    result = train(cfg, BlobDataset(40, 16), out, progress=False,
                   callbacks=[lambda info: seen.append([info.world_size, list(info.indices)])])
    save_file(result.model.state_dict(), f"{out}/rank{rank}.safetensors")
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(seen, f)
    """
)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One 2-step run under ``torchrun --nproc_per_node 2`` (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "worker.py"
    script.write_text(WORKER)
    out = tmp / "run"
    proc = torchrun(script, out, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_torchrun_two_processes_gloo(ddp_run):
    out = ddp_run

    seen = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for step in range(2):
        (w0, idx0), (w1, idx1) = seen[0][step], seen[1][step]
        assert w0 == w1 == 2
        assert len(idx0) == len(idx1) == 3
        assert not set(idx0) & set(idx1), f"step {step}: ranks saw the same samples"
    # After each step DDP has averaged gradients: both ranks hold identical weights.
    w = [load_file(out / f"rank{r}.safetensors") for r in (0, 1)]
    assert w[0].keys() == w[1].keys()
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    # … and they moved away from the (zero-initialised) output layer.
    assert w[0]["out.2.weight"].abs().sum() > 0
    # Rank 0 wrote the checkpoints, with state for both ranks' random streams.
    ckpt = out / "checkpoints" / "step_00000002"
    assert (ckpt / "state" / "rng_rank0.safetensors").is_file()
    assert (ckpt / "state" / "rng_rank1.safetensors").is_file()
    assert json.loads((ckpt / "state" / "trainer.json").read_text())["world_size"] == 2
    assert load_prior(out).kind == "blend++"


def test_resume_with_another_world_size_continues_with_a_warning(ddp_run, tmp_path, caplog):
    """A 2-process run continued by one process: allowed, re-seeded, and said so."""
    out = tmp_path / "run"
    shutil.copytree(ddp_run, out)

    every_step = {"warmup_steps": 1, "log_every": 1, "checkpoint_every": 1, "device": "cpu"}
    phases = [{"steps": 3, "crop": 8}]
    cfg = load_config("tiny", image_size=16, batch_size=3, phases=phases, **every_step)
    with caplog.at_level("WARNING"):
        result = train(cfg, BlobDataset(40, 16), out, progress=False)
    assert result.steps == 3
    assert "saved with 2" in caplog.text and "not bit-identical" in caplog.text
