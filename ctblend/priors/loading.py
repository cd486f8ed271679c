"""Prior checkpoints on disk: ``weights.safetensors`` + ``config.json`` (never pickle).

A prior folder holds the (EMA) weights and a JSON record of everything needed to rebuild
and use the network: prior kind, UNet config, diffusion schedule, image size, data scaling,
the command that trained it, steps and wall time. A training run folder (with a ``latest``
file naming its newest checkpoint) is accepted wherever a prior folder is, and so is the name of a
network shipped in ``ctblend/weights/`` (``blendpp_cpu128``) from any working directory.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ctblend.data.scaling import HU_MAX, HU_MIN
from ctblend.diffusion import VPSchedule
from ctblend.io.output import atomic_path, default_mode
from ctblend.models.unet import KIND_CHANNELS, UNet, UNetConfig
from ctblend.priors.base import PRIOR_KINDS, InferenceOptions, VolumePrior, precision_options
from ctblend.priors.blend import BlendPrior
from ctblend.priors.blendpp import BlendPPPrior
from ctblend.priors.partitions import PartitionPolicy
from ctblend.priors.slice2d import Slice2DPrior

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
LATEST_FILE = "latest"


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, pickled, or does not match what was asked for."""


@dataclass(frozen=True)
class DataScaling:
    """HU → network space: x = (clip(HU, hu_min, hu_max) − hu_min) / (hu_max − hu_min) ∈ [0, 1],
    network input 2x − 1 ∈ [−1, 1].

    A record, not an option: the datasets (``ctblend.data.scaling``), the trainer and the sampler
    implement exactly the protocol's scaling, so any other value is refused (a checkpoint never
    records a scaling it did not use)."""

    hu_min: float = float(HU_MIN)
    hu_max: float = float(HU_MAX)
    network_range: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "network_range", tuple(float(v) for v in self.network_range))
        if (self.hu_min, self.hu_max, self.network_range) != (HU_MIN, HU_MAX, (-1.0, 1.0)):
            raise ValueError(
                f"data_scaling hu_min={self.hu_min}, hu_max={self.hu_max}, network_range="
                f"{list(self.network_range)}: ctblend implements only the protocol's scaling "
                f"(HU [{HU_MIN}, {HU_MAX}] → [0, 1] → network [-1, 1])"
            )


@dataclass(frozen=True)
class PriorSpec:
    """Everything ``config.json`` records about a trained prior."""

    kind: str
    image_size: int
    unet: UNetConfig
    schedule: VPSchedule = field(default_factory=VPSchedule)
    data_scaling: DataScaling = field(default_factory=DataScaling)
    command: str = ""
    steps: int = 0
    wall_time_s: float = 0.0
    weights_dtype: str = "float32"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.kind not in PRIOR_KINDS:
            raise CheckpointError(
                f"unknown prior kind {self.kind!r}; expected one of {PRIOR_KINDS}"
            )
        expected = KIND_CHANNELS[self.kind]
        if (self.unet.in_channels, self.unet.out_channels) != expected:
            raise CheckpointError(
                f"a {self.kind!r} prior needs (in, out) channels {expected}, the UNet config has "
                f"({self.unet.in_channels}, {self.unet.out_channels})"
            )
        if self.image_size % self.unet.size_multiple:
            raise CheckpointError(
                f"image_size {self.image_size} is not a multiple of {self.unet.size_multiple}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet"] = self.unet.to_dict()
        d["data_scaling"]["network_range"] = list(self.data_scaling.network_range)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> PriorSpec:
        data = dict(data)
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(f"unsupported checkpoint format_version {version!r}")
        try:
            data["unet"] = UNetConfig.from_dict(data["unet"])
            data["schedule"] = VPSchedule.from_dict(data.get("schedule", {}))
            data["data_scaling"] = DataScaling(**data.get("data_scaling", {}))
            return cls(**data)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"malformed checkpoint config: {exc}") from exc


def write_prior_files(folder: Path, spec: PriorSpec, state_dict: dict[str, torch.Tensor]) -> None:
    """Write ``weights.safetensors`` and ``config.json`` into an existing (temporary) folder."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"kind": spec.kind})
    (folder / CONFIG_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")


def save_prior(folder: str | Path, spec: PriorSpec, state_dict: dict[str, torch.Tensor]) -> Path:
    """Write a prior folder atomically (temporary folder + rename). An existing folder's weights
    and config are replaced; its other files (model card, training YAMLs, curves) are kept.
    Files and folder get the umask's usual modes (0644 / 0755 for umask 022)."""
    folder = Path(folder)
    with atomic_path(folder, folder=True) as tmp:
        write_prior_files(tmp, spec, state_dict)
        if folder.is_dir():
            for extra in folder.iterdir():
                if extra.is_file() and not (tmp / extra.name).exists():
                    shutil.copy2(extra, tmp / extra.name)
        for path in tmp.iterdir():
            path.chmod(default_mode())
    return folder


def weights_dir() -> Path:
    """The folder of the networks shipped with ctblend (``ctblend/weights``)."""
    return Path(__file__).resolve().parent.parent / "weights"


def shipped_folder(name: str | Path) -> Path | None:
    """``ctblend/weights/<name>`` for the bare name of an installed network, else None."""
    if len(Path(name).parts) != 1:
        return None
    folder = weights_dir() / str(name)
    return folder if (folder / CONFIG_FILE).is_file() else None


def resolve_name(path: str | Path) -> Path:
    """``path`` as given when it exists, else the shipped network of that name; neither is a
    CheckpointError naming the shipped names."""
    path = Path(path)
    if path.exists():
        return path
    shipped = shipped_folder(path)
    if shipped is None:
        names = sorted(p.parent.name for p in weights_dir().glob(f"*/{CONFIG_FILE}"))
        raise CheckpointError(
            f"{path}: no such checkpoint folder, and no shipped network of that name "
            f"(shipped: {', '.join(names) or 'none'})"
        )
    return shipped


def _fbp_unet_record(data: dict) -> str | None:
    """A description of an FBP-UNet network record (its ``config.json``), else None."""
    if data.get("kind") == "fbp-unet":
        return f"an FBP-UNet network (for protocol {data.get('protocol')})"
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """The prior folder for ``path``: a prior folder, its ``weights.safetensors``, a run folder
    (through its ``latest`` file) or a shipped name. Anything else — a pickle above all — is a
    CheckpointError."""
    path = resolve_name(path)
    if path.is_file():
        if path.name == WEIGHTS_FILE:
            path = path.parent
        else:
            raise CheckpointError(
                f"{path}: not a ctblend checkpoint. Priors load only from a folder with "
                f"{WEIGHTS_FILE} + {CONFIG_FILE}; pickle files (.pt, .pth, .ckpt, .pkl) are never "
                "loaded"
            )
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if not (path / CONFIG_FILE).is_file() and (path / LATEST_FILE).is_file():
        path = path / (path / LATEST_FILE).read_text().strip()
    missing = [n for n in (WEIGHTS_FILE, CONFIG_FILE) if not (path / n).is_file()]
    if missing:
        raise CheckpointError(f"{path}: checkpoint folder lacks {', '.join(missing)}")
    return path


def read_spec(path: str | Path) -> PriorSpec:
    """The PriorSpec of a checkpoint (``config.json``)."""
    folder = resolve_checkpoint(path)
    try:
        data = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{folder / CONFIG_FILE}: expected a JSON object (a prior record)")
    other = _fbp_unet_record(data)
    if other is not None:
        raise CheckpointError(
            f"{folder}: {other}, not a diffusion prior; expected a prior folder "
            "(kind blend++, blend or slice2d)"
        )
    try:
        return PriorSpec.from_dict(data)
    except ValueError as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {exc}") from exc


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, PriorSpec]:
    """Rebuild the UNet of a checkpoint (float32, eval mode) and return it with its spec."""
    folder = resolve_checkpoint(path)
    spec = read_spec(folder)
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{folder / WEIGHTS_FILE}: not a valid safetensors file ({exc})"
        ) from exc
    model = UNet(spec.unet)
    load_state_checked(model, state, folder / WEIGHTS_FILE)
    return model.to(device).eval(), spec


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load with one readable error for missing/unexpected keys or shape mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        detail = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}" if missing else "",
                f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''}"
                if unexpected
                else "",
                f"shape mismatch {shapes[:3]}{'…' if len(shapes) > 3 else ''}" if shapes else "",
            )
            if part
        )
        raise CheckpointError(f"{source}: weights do not match the UNet in config.json ({detail})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def build_prior(
    model: nn.Module,
    spec: PriorSpec,
    policy: PartitionPolicy | None = None,
    options: InferenceOptions | None = None,
) -> VolumePrior:
    """Wrap a network in the VolumePrior for ``spec.kind``."""
    if spec.kind == "blend++":
        return BlendPPPrior(model, spec.image_size, spec.schedule, options, policy=policy)
    if policy is not None:
        raise ValueError(f"a partition policy applies only to blend++ priors, not {spec.kind!r}")
    cls = BlendPrior if spec.kind == "blend" else Slice2DPrior
    return cls(model, spec.image_size, spec.schedule, options)


def load_prior(
    path: str | Path,
    kind: str | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    policy: PartitionPolicy | None = None,
    *,
    group_batch: int | str = "auto",
    precision: str = "auto",
    channels_last: bool | None = None,
) -> VolumePrior:
    """Load a VolumePrior from a checkpoint folder, a run folder or a shipped name
    (``"blendpp_cpu128"``, from any directory).

    kind / image_size: what the caller expects; a mismatch is a CheckpointError.
    precision: "auto" (bf16 where ``device`` computes it natively, else fp32; what the CLI
    runs), "fp32" or "bf16" (see :func:`ctblend.priors.base.precision_options`);
    channels_last: None follows the precision (on for bf16 on a CPU); group_batch: network
    inputs per forward pass.
    """
    options = precision_options(precision, device)
    if channels_last is not None:
        options["channels_last"] = channels_last
    spec = read_spec(path)
    if kind is not None and kind != spec.kind:
        raise CheckpointError(
            f"{path}: checkpoint holds a {spec.kind!r} prior, but a {kind!r} prior was requested"
        )
    if image_size is not None and image_size != spec.image_size:
        raise CheckpointError(
            f"{path}: checkpoint was trained at {spec.image_size}×{spec.image_size}, "
            f"but {image_size}×{image_size} was requested"
        )
    model, spec = load_model(path, device)
    return build_prior(model, spec, policy, InferenceOptions(group_batch, **options))
