"""``ctblend info``: versions, operator backends, GPU and the shipped networks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import common

PACKAGES = (
    "ctblend",
    "torch",
    "numpy",
    "scipy",
    "h5py",
    "pydicom",
    "scikit-image",
    "matplotlib",
    "safetensors",
    "PyYAML",
    "tqdm",
    "astra-toolbox",
    "nibabel",
)


HELP = "versions, backends, GPU, shipped priors"


def add_arguments(p) -> None:
    """The options of ``ctblend info``."""
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_common(p, options_config=False)


def _info() -> dict[str, Any]:
    import importlib.metadata
    import platform

    import torch

    from ctblend.pipeline.weights import weights_dir
    from operators.backends.astra import astra_available, astra_cuda_available

    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    folder = weights_dir()
    priors = {
        path.name: _shipped_summary(path)
        for path in (sorted(folder.iterdir()) if folder.is_dir() else [])
        if (path / "config.json").is_file()
    }
    astra = None
    if astra_available():
        astra = "CPU 2D" + (" + CUDA 2D/3D" if astra_cuda_available() else ", no CUDA")
    return {
        "platform": platform.platform(),
        "versions": versions,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": gpus,
        "backends": {
            "torch_sparse": "CPU" + (" + CUDA" if gpus else ""),
            "joseph": "CPU" + (" + CUDA" if gpus else ""),
            "astra": astra,
            "raymarch": "CPU" + (" + CUDA" if gpus else ""),
        },
        "shipped_priors": priors,
        "weights_dir": str(folder),
    }


def _shipped_summary(path: Path) -> dict[str, Any]:
    """Kind, image size, steps (and protocol) of a shipped prior or FBP-UNet folder."""
    from ctblend.baselines.fbp_unet import read_fbp_unet_spec
    from ctblend.priors.loading import read_spec

    try:
        spec = read_spec(path)
        return {"kind": spec.kind, "image_size": spec.image_size, "steps": spec.steps}
    except ValueError as prior_error:
        try:
            _, net = read_fbp_unet_spec(path)
        except ValueError:
            return {"error": common.one_line(prior_error)}
        return {
            "kind": f"fbp-unet for {net.protocol}",
            "image_size": net.image_size,
            "steps": net.steps,
        }


def run(args: argparse.Namespace) -> int:
    info = _info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    v = info["versions"]
    print(f"ctblend {v['ctblend']} — Python {v['python']} on {info['platform']}")
    print(
        "packages: "
        + ", ".join(f"{k} {val}" for k, val in v.items() if k not in ("ctblend", "python") and val)
    )
    missing = [k for k, val in v.items() if val is None]
    if missing:
        print("not installed: " + ", ".join(missing))
    gpu = ", ".join(info["gpus"]) if info["gpus"] else "none"
    cuda = f" (CUDA {info['cuda']})" if info["cuda"] else ""
    print(f"GPU: {gpu}{cuda}; torch CPU threads: {info['torch_threads']}")
    backends = info["backends"]
    print(
        "operator backends: "
        + ", ".join(f"{name} ({where or 'not installed'})" for name, where in backends.items())
    )
    priors = info["shipped_priors"]
    for name, p in priors.items():
        detail = p.get("error") or f"{p['kind']}, {p['image_size']}², {p['steps']} steps"
        print(f"shipped network: {name} ({detail})")
    if not priors:
        print(f"shipped networks: none installed in {info['weights_dir']}")
    return 0
