"""Where code runs: device selection, the memory it can give, and a description of the machine
(for records and docs)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Under torchrun a bare ``cuda`` means this rank's GPU (``LOCAL_RANK``).
    """
    name = name or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is None and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def available_memory() -> int | None:
    """Bytes of memory the machine can give now (``MemAvailable`` of ``/proc/meminfo``, else the
    free physical pages); None where neither is known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units: ``74.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(nbytes: int, what: str, expected: str = "less") -> None:
    """A one-line ``ValueError`` when ``what`` needs more than ``available_memory()`` (checked
    before allocating, instead of the allocator's traceback); ``expected`` says what would fit."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise ValueError(
            f"{what} needs ~{format_bytes(nbytes)} of memory; this machine has "
            f"{format_bytes(available)} available; expected {expected}"
        )


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """True for CPUs with native bf16 arithmetic (AVX512-BF16 or AMX)."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def machine_info(device: torch.device | None = None) -> dict[str, Any]:
    """CPU model and count, torch threads, OS, Python/torch versions, GPU name (if used)."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_has_bf16(),
        "torch_threads": torch.get_num_threads(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device or "cpu"),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def describe_machine(info: dict[str, Any] | None = None) -> str:
    """One line for reports: CPU, cores, torch threads, GPU, OS, torch version."""
    info = info or machine_info()
    text = f"{info['cpu']} ({info['cpu_count']} CPUs, {info['torch_threads']} torch threads)"
    if "gpu" in info:
        text += f", {info['gpu']}"
    return f"{text}, {info['os']}, torch {info['torch']}, Python {info['python']}"
