"""The shipped cpu128 priors: one fair recipe to step 8 000 (stage 2), the stage-2 config that
reproduces it, and blend++'s stage 3 (issue 16's recipe) that continues it to the shipped step."""

from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ctblend.models.unet import KIND_CHANNELS
from ctblend.priors.loading import read_spec
from ctblend.training import TrainConfig, load_config

WEIGHTS = Path(__file__).resolve().parents[1] / "ctblend" / "weights"
SHIPPED = {"blendpp_cpu128": "blend++", "blend_cpu128": "blend", "slice2d_cpu128": "slice2d"}


#: priors shipped after a third stage that continues the stage-2 weights (init_from)
STAGE3 = {"blendpp_cpu128"}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_stage2_config_resumes_the_shipped_network(name):
    folder = WEIGHTS / name
    spec = read_spec(folder)
    stage1 = load_config("cpu128-short", kind=SHIPPED[name])
    stage2 = TrainConfig.from_yaml(folder / "train_stage2.yaml")
    assert spec.kind == stage2.kind == SHIPPED[name]
    # Stage 2 trains the network stage 1 started; the shipped weights are taken at its end, or,
    # after a stage 3, at the end of the stage-3 run that starts from them.
    for field in ("unet", "schedule", "data_scaling", "image_size"):
        assert getattr(stage2, field) == getattr(stage1, field) == getattr(spec, field), field
    assert stage2.total_steps == 8000
    assert stage1.total_steps < stage2.total_steps  # stage 2 resumes stage 1's run
    if name in STAGE3:
        stage3 = TrainConfig.from_yaml(folder / "train_stage3.yaml")
        assert stage3.unet == stage2.unet and stage3.kind == stage2.kind
        assert stage3.init_from is not None and stage3.holdout > 0
        assert stage3.total_steps == spec.steps
    else:
        assert stage2.total_steps == spec.steps
    assert (folder / "MODEL_CARD.md").is_file() and (folder / "loss.png").is_file()


def test_shipped_priors_share_one_network():
    specs = {name: read_spec(WEIGHTS / name) for name in SHIPPED}
    unets = {replace(spec.unet, in_channels=1, out_channels=1) for spec in specs.values()}
    assert len(unets) == 1  # same network apart from the kind's channels
    for name, spec in specs.items():
        weights = load_file(str(WEIGHTS / name / "weights.safetensors"))
        in_channels, out_channels = KIND_CHANNELS[spec.kind]
        assert weights["conv_in.weight"].shape[1] == in_channels
        assert weights["out.2.weight"].shape[0] == out_channels
