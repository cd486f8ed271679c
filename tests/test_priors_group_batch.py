"""group_batch: 4 network inputs per forward pass on a CPU, sized to free memory on a GPU."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ctblend.models.unet import UNet, UNetConfig
from ctblend.priors.base import (
    ACTIVATION_MAPS,
    BatchedNetwork,
    InferenceOptions,
    auto_group_batch,
)

GiB, MiB = 2**30, 2**20


class BatchRecorder(nn.Module):
    """ε = x; records the batch size of every forward pass."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))
        self.batches: list[int] = []

    def forward(self, x, t, gap):
        self.batches.append(x.shape[0])
        return x


@pytest.mark.parametrize(
    "group_batch, batches",
    [("auto", [4, 4, 2]), (3, [3, 3, 3, 1]), (16, [10])],
)
def test_cpu_group_batch_is_4_unless_an_integer_is_given(group_batch, batches):
    net = BatchRecorder()
    x = torch.rand(10, 3, 8, 8)
    out = BatchedNetwork(net, InferenceOptions(group_batch=group_batch))(x, 5, 1)
    assert net.batches == batches and torch.equal(out, x)


def test_group_batch_defaults_to_auto():
    assert InferenceOptions().group_batch == "auto"


@pytest.mark.parametrize(
    "free, size, channels, expected",
    [
        (20 * GiB, 256, 128, 20),  # 16 maps × 128 × 256² × 4 B = 512 MiB per input; 10 GiB
        (130 * GiB, 256, 128, 64),  # an H200: 130 would fit; clamped to 64
        (2 * GiB, 128, 48, 21),  # 48 MiB per input; 1 GiB / 48 MiB = 21.3
        (100 * MiB, 256, 128, 1),  # not one input fits: still 1
        (300 * MiB, 64, 16, 37),  # 4 MiB per input; 150 MiB / 4 MiB = 37.5
    ],
)
def test_auto_group_batch_rule(free, size, channels, expected):
    assert auto_group_batch(free, size, channels) == expected


@pytest.mark.parametrize("bad", [0, -2, 2.5, "max", True])
def test_bad_group_batch_is_one_clear_error(bad):
    with pytest.raises(ValueError, match="group_batch must be 'auto' or an integer >= 1"):
        InferenceOptions(group_batch=bad)


class LiveTensors(TorchDispatchMode):
    """Peak bytes of the tensors that ops create and that are alive at once (views counted
    once, by storage)."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def _free(self, ptr: int) -> None:
        self.current -= self.live.pop(ptr, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.untyped_storage().data_ptr() in self.live:
                continue
            ptr, size = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
            self.live[ptr] = size
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(t, self._free, ptr)
        return out


def _peak_bytes(model: nn.Module, batch: int, size: int) -> int:
    x = torch.randn(batch, 3, size, size)
    t, gap = torch.full((batch,), 10), torch.ones(batch, dtype=torch.long)
    with torch.inference_mode(), LiveTensors() as live:
        model(x, t, gap)
    return live.peak


@pytest.mark.parametrize(
    "mults, attention, size", [((1, 2, 2, 4), (3,), 32), ((1, 1, 2, 2, 4, 4), (4,), 64)]
)
def test_activation_budget_covers_the_unets_measured_activations(mults, attention, size):
    """Per extra input, the UNet's live tensors in inference stay within the budgeted
    ACTIVATION_MAPS fp32 maps of its base width at full resolution, and use over half of it."""
    base = 16
    cfg = UNetConfig(
        base_channels=base,
        channel_mults=mults,
        attention_levels=attention,
        head_channels=16,
        norm_groups=16,
    )
    model = UNet(cfg).eval()
    per_input = (_peak_bytes(model, 3, size) - _peak_bytes(model, 1, size)) / 2
    budget = ACTIVATION_MAPS * base * size**2 * 4
    assert budget / 2 < per_input <= budget
