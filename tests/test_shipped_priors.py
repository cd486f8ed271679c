"""The shipped cpu128 priors: one fair recipe, and the stage-2 config that reproduces them."""

from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ctblend.models.unet import KIND_CHANNELS
from ctblend.priors.loading import read_spec
from ctblend.training import TrainConfig, load_config

WEIGHTS = Path(__file__).resolve().parents[1] / "ctblend" / "weights"
SHIPPED = {"blendpp_cpu128": "blend++", "blend_cpu128": "blend", "slice2d_cpu128": "slice2d"}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_stage2_config_resumes_the_shipped_network(name):
    folder = WEIGHTS / name
    spec = read_spec(folder)
    stage1 = load_config("cpu128-short", kind=SHIPPED[name])
    stage2 = TrainConfig.from_yaml(folder / "train_stage2.yaml")
    assert spec.kind == stage2.kind == SHIPPED[name]
    # Stage 2 trains the network stage 1 started, and ends where the shipped weights were taken.
    for field in ("unet", "schedule", "data_scaling", "image_size"):
        assert getattr(stage2, field) == getattr(stage1, field) == getattr(spec, field), field
    assert stage2.total_steps == spec.steps
    assert stage1.total_steps < stage2.total_steps  # stage 2 resumes stage 1's run
    assert (folder / "MODEL_CARD.md").is_file() and (folder / "loss.png").is_file()


def test_shipped_priors_share_one_recipe():
    specs = {name: read_spec(WEIGHTS / name) for name in SHIPPED}
    assert len({spec.steps for spec in specs.values()}) == 1
    unets = {replace(spec.unet, in_channels=1, out_channels=1) for spec in specs.values()}
    assert len(unets) == 1  # same network apart from the kind's channels
    for name, spec in specs.items():
        weights = load_file(str(WEIGHTS / name / "weights.safetensors"))
        in_channels, out_channels = KIND_CHANNELS[spec.kind]
        assert weights["conv_in.weight"].shape[1] == in_channels
        assert weights["out.2.weight"].shape[0] == out_channels
