"""Device selection and machine description."""

from __future__ import annotations

import pytest
import torch

from ctblend.runtime import describe_machine, machine_info, resolve_device


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="expected auto, cpu, cuda"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_machine_description_names_cpu_threads_and_versions():
    info = machine_info()
    text = describe_machine(info)
    assert info["cpu"] and info["cpu"] in text
    assert f"{torch.get_num_threads()} torch threads" in text and torch.__version__ in text


def test_memory_is_checked_before_allocating():
    """74.5 GiB is what numpy reported for --scale 100000 (80 · 10⁹ bytes / 2³⁰ = 74.51)."""
    from ctblend.runtime import available_memory, check_memory, format_bytes

    assert format_bytes(80e9) == "74.5 GiB" and format_bytes(512) == "512 B"
    assert format_bytes(3 * 2**40) == "3.0 TiB"
    free = available_memory()
    assert free is not None and free > 2**20
    check_memory(2**20, "a MiB")
    with pytest.raises(
        ValueError, match=r"^x needs ~.* of memory; this machine has .*; expected y$"
    ):
        check_memory(free * 4, "x", "y")
