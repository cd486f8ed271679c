"""The VolumePrior interface (the sampler's only view of networks) and batched inference."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ctblend.diffusion import VPSchedule
from ctblend.runtime import cpu_has_bf16

PRIOR_KINDS = ("blend++", "blend", "slice2d")

# group_batch="auto": network inputs per forward pass. The UNet's live tensors per input in
# inference peak at 13 (default multipliers) and 9 (paper256's) fp32 full-resolution maps of its
# base width (measured in tests/test_priors_group_batch.py); 16 are budgeted, in half of the
# free GPU memory (the rest: allocator slack, cuDNN workspace, the operator, CG buffers).
CPU_GROUP_BATCH = 4  # smaller group batches were faster on a CPU (docs/benchmarks/sampler.md)
ACTIVATION_MAPS = 16
GROUP_BATCH_RANGE = (1, 64)
DEFAULT_BASE_CHANNELS = 128  # for networks that do not say their width: the widest shipped


def auto_group_batch(free_bytes: int, image_size: int, channels: int) -> int:
    """Network inputs per forward pass on a GPU with ``free_bytes`` free, for ``image_size``²
    inputs to a network of base width ``channels``: half the free memory over
    ``ACTIVATION_MAPS`` fp32 maps of ``channels × image_size²`` per input, within
    ``GROUP_BATCH_RANGE``."""
    per_input = ACTIVATION_MAPS * channels * image_size**2 * 4
    lo, hi = GROUP_BATCH_RANGE
    return max(lo, min(hi, free_bytes // 2 // per_input))


@runtime_checkable
class VolumePrior(Protocol):
    """ε for a whole volume at one timestep.

    kind: "blend++" | "blend" | "slice2d"; image_size: the H = W it was trained at.
    ``eps(x_t, t, step, generator)``: x_t (Z, H, W) in the prior's [−1, 1] space, t the
    diffusion timestep, step the sampling-step index (partitions alternate on it), generator
    the source of any randomness (partition offsets); returns ε with x_t's shape, dtype and
    device.
    """

    kind: str
    image_size: int

    def eps(
        self, x_t: Tensor, t: int, step: int, generator: torch.Generator | None = None
    ) -> Tensor: ...


@dataclass(frozen=True)
class InferenceOptions:
    """How networks are evaluated.

    group_batch: network inputs per forward pass (bounds memory), an integer or "auto"
    (``CPU_GROUP_BATCH`` on a CPU; on a GPU sized to its free memory by
    :func:`auto_group_batch` at each call); precision: "fp32" (reference) or "bf16" (autocast,
    CPU or GPU); channels_last: memory format of inputs.
    """

    group_batch: int | Literal["auto"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        gb = self.group_batch
        if gb != "auto" and (isinstance(gb, bool) or not isinstance(gb, int) or gb < 1):
            raise ValueError(f"group_batch must be 'auto' or an integer >= 1, got {gb!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")


class BatchedNetwork:
    """Evaluates an ε-network ``model(x (B, C, H, W), t (B,), gap (B,))`` in bounded batches."""

    def __init__(self, model: nn.Module, options: InferenceOptions):
        self.model = model.eval()
        self.options = options
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        first = next(iter(model.parameters()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.dtype = first.dtype if first is not None else torch.float32
        config = getattr(model, "config", None)
        self.base_channels = getattr(config, "base_channels", DEFAULT_BASE_CHANNELS)

    def group_batch(self, image_size: int) -> int:
        """Inputs per forward pass: the option's integer, else ``CPU_GROUP_BATCH`` on a CPU
        and :func:`auto_group_batch` of the device's free memory on a GPU (free to CUDA plus
        what torch's caching allocator holds unused)."""
        if self.options.group_batch != "auto":
            return self.options.group_batch
        if self.device.type != "cuda":
            return CPU_GROUP_BATCH
        free = torch.cuda.mem_get_info(self.device)[0]  # + what torch's cache holds unused:
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return auto_group_batch(free, image_size, self.base_channels)

    def __call__(self, inputs: Tensor, t: int, label: int | Tensor) -> Tensor:
        """inputs: (N, C, H, W), label: int or (N,) → ε (N, Cout, H, W), float32, inputs' device."""
        opts = self.options
        n = inputs.shape[0]
        labels = torch.as_tensor(label, device=self.device).expand(n) if n else None
        outs = []
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if opts.precision == "bf16"
            else nullcontext()
        )
        batch = self.group_batch(inputs.shape[-1])
        with torch.inference_mode(), autocast:
            for start in range(0, n, batch):
                chunk = inputs[start : start + batch].to(self.device, self.dtype)
                if opts.channels_last:
                    chunk = chunk.contiguous(memory_format=torch.channels_last)
                tt = torch.full((chunk.shape[0],), int(t), device=self.device, dtype=torch.long)
                out = self.model(chunk, tt, labels[start : start + chunk.shape[0]])
                outs.append(out.float().to(inputs.device))
        return torch.cat(outs).contiguous()


def auto_precision(device: str | torch.device = "cpu") -> Literal["fp32", "bf16"]:
    """``bf16`` where the hardware computes it natively (CUDA with bf16, or a CPU with
    AVX512-BF16/AMX), else ``fp32``. fp32 stays the reference; bf16 changes ε by ~0.3 %."""
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def precision_options(precision: str, device: str | torch.device = "cpu") -> dict[str, Any]:
    """``load_prior`` keyword options for ``precision`` ("fp32", "bf16" or "auto") on ``device``:
    "auto" resolves with :func:`auto_precision`; an explicit "bf16" where the hardware lacks it
    natively runs fp32 and warns once why (emulated bf16 was ~77× slower than fp32 on such a
    CPU); bf16 on a CPU also feeds channels-last inputs (the fastest layout there,
    docs/benchmarks/sampler.md)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision {precision!r}; expected auto, fp32 or bf16")
    device = torch.device(device)
    native = auto_precision(device)
    resolved = native if precision == "auto" else precision
    if resolved == "bf16" and native != "bf16":
        where = "this CPU has no AVX512-BF16/AMX" if device.type == "cpu" else f"{device} lacks it"
        warnings.warn(
            f"bf16 asked for, but {where} (native bf16): running fp32 instead (emulated bf16 "
            "is ~77x slower)",
            RuntimeWarning,
            stacklevel=2,
        )
        resolved = "fp32"
    return {"precision": resolved, "channels_last": resolved == "bf16" and device.type == "cpu"}


def check_volume(x_t: Tensor, image_size: int | None = None) -> None:
    """Validate a (Z, H, W) volume handed to ``eps``."""
    if x_t.ndim != 3:
        raise ValueError(f"x_t must be a (Z, H, W) volume, got shape {tuple(x_t.shape)}")
    if image_size is not None and tuple(x_t.shape[1:]) != (image_size, image_size):
        raise ValueError(
            f"prior trained at {image_size}×{image_size}; x_t has slices {tuple(x_t.shape[1:])}"
        )


class NetworkPrior:
    """Base of the priors: a network trained at ``image_size``², its VP ``schedule`` and the
    inference ``options`` it runs with (in a :class:`BatchedNetwork`)."""

    kind: str

    def __init__(
        self,
        model: nn.Module,
        image_size: int,
        schedule: VPSchedule | None = None,
        options: InferenceOptions | None = None,
    ):
        self.image_size = image_size
        self.schedule = schedule or VPSchedule()
        self.net = BatchedNetwork(model, options or InferenceOptions())


class SliceWisePrior(NetworkPrior):
    """Base of priors that evaluate one network input per slice (``blend``, ``slice2d``).

    Subclasses set ``kind`` and ``label`` and define ``inputs(x_t) -> (Z, C, H, W)``; the
    network's first output channel is ε of that slice.
    """

    label: int

    def inputs(self, x_t: Tensor) -> Tensor:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def eps(
        self, x_t: Tensor, t: int, step: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """x_t: (Z, H, W) → ε (Z, H, W); ``step`` and ``generator`` are unused."""
        check_volume(x_t, self.image_size)
        return self.net(self.inputs(x_t), t, self.label)[:, 0].to(x_t.dtype)

    def eps_batch(
        self, x_t: Tensor, t: int, step: int, generators: Sequence[torch.Generator]
    ) -> Tensor:
        """K independent volumes x_t (K, Z, H, W) → ε (K, Z, H, W) in one batched network
        pass; ``step`` and ``generators`` are unused."""
        check_volume(x_t[0], self.image_size)
        inputs = torch.cat([self.inputs(v) for v in x_t])
        return self.net(inputs, t, self.label)[:, 0].reshape(x_t.shape).to(x_t.dtype)
