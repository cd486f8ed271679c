"""The FBP-UNet network (residual UNet on FBP slices) and its loading, saving and export."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from ctblend.baselines.fbp_unet.config import KIND, FBPUNetSpec, read_fbp_unet_spec, write_network
from ctblend.io.output import atomic_path
from ctblend.models.unet import UNet, UNetConfig
from ctblend.priors.loading import (
    WEIGHTS_FILE,
    CheckpointError,
    load_state_checked,
)
from ctblend.protocol import get_protocol


class ResidualUNet(nn.Module):
    """``forward(x_fbp (B, 1, H, W)) → x_fbp + UNet(2 x_fbp − 1)``, all in [0, 1] units."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        if (config.in_channels, config.out_channels) != (1, 1):
            raise ValueError(
                f"an FBP-UNet needs 1 input and 1 output channel, the UNet config has "
                f"({config.in_channels}, {config.out_channels})"
            )
        self.unet = UNet(config)

    def forward(self, x: Tensor) -> Tensor:
        zeros = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return x + self.unet(2.0 * x - 1.0, zeros, zeros)


class FBPUNet:
    """A trained FBP-UNet: ``refine(x_fbp (Z, H, W)) → (Z, H, W)`` slice by slice."""

    kind = KIND

    def __init__(self, model: ResidualUNet, spec: FBPUNetSpec, name: str = KIND, batch: int = 16):
        self.model = model.eval()
        self.spec = spec
        self.name = name
        self.batch = int(batch)

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def protocol(self) -> str:
        return self.spec.protocol

    @classmethod
    def load(
        cls,
        folder: str | Path,
        protocol: str | None = None,
        image_size: int | None = None,
        device: str | torch.device = "cpu",
        batch: int = 16,
    ) -> FBPUNet:
        """Load a network (or run) folder; ``protocol`` / ``image_size``: what the caller needs
        (a mismatch is a CheckpointError naming both)."""
        path, spec = read_fbp_unet_spec(folder)
        if protocol is not None and get_protocol(protocol).name != spec.protocol:
            raise CheckpointError(
                f"{folder}: FBP-UNet was trained for protocol {spec.protocol!r}, but "
                f"{protocol!r} was requested (one network per protocol)"
            )
        if image_size is not None and image_size != spec.image_size:
            raise CheckpointError(
                f"{folder}: FBP-UNet was trained at {spec.image_size}×{spec.image_size}, "
                f"but {image_size}×{image_size} was requested"
            )
        try:
            state = load_file(str(path / WEIGHTS_FILE))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path / WEIGHTS_FILE}: not a valid safetensors file") from exc
        model = ResidualUNet(spec.unet)
        load_state_checked(model, state, path / WEIGHTS_FILE)
        name = Path(folder).name if path == Path(folder) else f"{Path(folder).name}/{path.name}"
        return cls(model.to(device), spec, name=name, batch=batch)

    def refine(self, x_fbp: Tensor) -> Tensor:
        """``x_fbp`` ``(Z, H, W)`` in [0, 1] units → refined ``(Z, H, W)`` (same device, dtype)."""
        if not isinstance(x_fbp, Tensor) or x_fbp.ndim != 3:
            shape = tuple(getattr(x_fbp, "shape", ())) or type(x_fbp).__name__
            raise ValueError(f"refine expects a (Z, H, W) tensor, got {shape}")
        size = self.image_size
        if tuple(x_fbp.shape[1:]) != (size, size):
            raise ValueError(
                f"FBP-UNet {self.name} was trained on {size}×{size} slices, got "
                f"{tuple(x_fbp.shape[1:])}"
            )
        first = next(self.model.parameters())
        out = torch.empty_like(x_fbp)
        with torch.inference_mode():
            for start in range(0, x_fbp.shape[0], self.batch):
                chunk = x_fbp[start : start + self.batch, None].to(first.device, first.dtype)
                out[start : start + self.batch] = self.model(chunk)[:, 0].to(out)
        return out


def save_fbp_unet(folder: str | Path, spec: FBPUNetSpec, state_dict: dict[str, Tensor]) -> Path:
    """Write a network folder atomically (temporary folder + rename); replaces an old one."""
    with atomic_path(folder, folder=True) as tmp:
        write_network(tmp, spec, state_dict)
    return Path(folder)


def export_fbp_unet(source: str | Path, dest: str | Path, dtype: str = "float16") -> Path:
    """Write a shippable network folder (weights in ``dtype`` + config.json, no training state)."""
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {list(dtypes)}, got {dtype!r}")
    folder, spec = read_fbp_unet_spec(source)
    weights = load_file(str(folder / WEIGHTS_FILE))
    weights = {k: v.to(dtypes[dtype]) if v.is_floating_point() else v for k, v in weights.items()}
    return save_fbp_unet(dest, replace(spec, weights_dtype=dtype), weights)
