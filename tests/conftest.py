"""Shared fixtures: the location of ../shared data, the GPU marker, one intra-op thread, the
small UNet of the model tests and two-process ``torchrun`` runs."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
#: A UNet small enough for CPU tests (``UNetConfig(**SMALL_UNET)``).
SMALL_UNET = dict(
    base_channels=8,
    channel_mults=(1, 2),
    num_res_blocks=1,
    attention_levels=(1,),
    head_channels=8,
    norm_groups=4,
)


def torchrun(*args: str, cwd: Path | None = None, timeout: float = 300):
    """``torchrun --standalone --nproc_per_node 2 ARGS`` (gloo on loopback, one thread each)."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + [str(a) for a in args],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def shared_dir() -> Path:
    """The ``shared`` folder beside the repository (override with ``CTBLEND_SHARED``)."""
    return Path(os.environ.get("CTBLEND_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def ct_dir() -> Path:
    """``../shared/data/ct`` with the real HDF5 volumes; skips the test when absent."""
    path = shared_dir() / "data" / "ct"
    if not any(path.glob("*.h5")):
        pytest.skip(f"real CT volumes not found in {path} (set CTBLEND_SHARED)")
    return path


@pytest.fixture(scope="session")
def dicom_dir() -> Path:
    """``../shared/data/dicom/cptac_pda_chest_16``; skips the test when absent."""
    path = shared_dir() / "data" / "dicom" / "cptac_pda_chest_16"
    if not (path / "EXPECTED.json").is_file():
        pytest.skip(f"real DICOM series not found in {path} (set CTBLEND_SHARED)")
    return path


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module", autouse=True)
def _drop_cached_system_matrices():
    """The torch_sparse backend caches system matrices process-wide (up to 8 GiB by default);
    each test module's are dropped when it ends, so the suite holds one module's at a time."""
    yield
    from operators.backends.sparse import CACHE

    CACHE.clear()
    gc.collect()


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Two shared cores: one intra-op thread avoids OpenMP contention with other processes.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
