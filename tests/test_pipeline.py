"""Method configs: each method takes only its own options (one-line errors), YAML round trips,
and ``reconstruct`` with a config object, a mapping or keywords."""

from __future__ import annotations

import pytest
import torch

import operators as ops
from ctblend.pipeline import METHODS, REGISTRY, method_config, reconstruct
from ctblend.pipeline.configs import DDSConfig, DiffusionBlendPPConfig, SIRTConfig
from ctblend.priors.partitions import PartitionPolicy

#: An option each method does not use (another method's), per method.
UNUSED = {
    "fbp": "iterations",
    "fdk": "nfe",
    "fbp-unet": "nfe",
    "sirt": "lam",
    "tv": "filter",
    "dds": "partition",
    "dds2d": "iterations",
    "diffusionblend": "partition",
    "diffusionblend++": "filter",
}


def test_every_method_is_covered_and_names_its_config():
    assert set(UNUSED) == set(METHODS)
    assert all(REGISTRY[m].config.method == m for m in METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_an_unused_option_fails_with_one_line_naming_option_and_method(method):
    option = UNUSED[method]
    with pytest.raises(ValueError) as info:
        method_config(method, {option: 1})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{method}: option {option!r} is not used by this method")
    assert ", ".join(REGISTRY[method].config.options()) in message


@pytest.mark.parametrize("method", METHODS)
def test_every_config_round_trips_through_yaml(method, tmp_path):
    cls = REGISTRY[method].config
    changed = cls().to_dict()  # the options of the default consistency
    for name, value in changed.items():  # a non-default value of every numeric option
        if isinstance(value, int) and not isinstance(value, bool):
            changed[name] = value + 1
    config = cls.from_dict(changed)
    path = config.to_yaml(tmp_path / f"{method}.yaml")
    assert cls.from_yaml(path) == config
    assert cls.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "method, options, text",
    [
        ("sirt", {"iterations": 0}, "sirt: option iterations=0; expected an integer >= 1"),
        ("tv", {"lam": -1.0}, "tv: option lam=-1.0"),
        ("fbp", {"filter": "box"}, "fbp: option filter='box'; expected one of ram-lak"),
        ("dds", {"admm_persistent": "yes"}, "expected one of False, True"),
        ("dds2d", {"consistency": "admm"}, "expected one of cg, cg-slice, noise-aware, admm-tvz"),
        ("dds", {"consistency": "cg"}, "dds: option consistency='cg'; expected one of admm-tvz"),
        ("diffusionblend++", {"eta": 1.5}, r"option eta=1.5; expected a number in \[0.0, 1.0\]"),
        ("dds2d", {"eta": -0.1}, r"option eta=-0.1; expected a number in \[0.0, 1.0\]"),
        (
            "diffusionblend",
            {"consistency": "noise-aware", "gamma": 0},
            "gamma=0; expected a number > 0",
        ),
        (
            "dds2d",
            {"rho": 5.0},
            "option 'rho' is used only with consistency=admm-tvz, not consistency=cg",
        ),
        ("dds", {"gamma": 1.0}, "option 'gamma' is used only with consistency=noise-aware"),
        ("diffusionblend++", {"eps_from": "tweedie"}, "expected one of network, x0"),
        ("diffusionblend++", {"partition": "cross"}, "expected one of fixed, adjacency"),
        ("diffusionblend", {"nfe": 0}, "diffusionblend: option nfe=0"),
    ],
)
def test_bad_values_fail_with_one_line(method, options, text):
    with pytest.raises(ValueError, match=text.replace("+", r"\+")):
        method_config(method, options)


def test_method_defaults_and_partition_policies():
    assert DDSConfig().nfe == 100 and method_config("dds2d").nfe == 200
    assert DiffusionBlendPPConfig().policy == PartitionPolicy("random", 2)
    assert DiffusionBlendPPConfig(partition="fixed").policy == PartitionPolicy("fixed", 0)
    assert DiffusionBlendPPConfig(partition="adjacency").policy == PartitionPolicy("random", 0)


def test_reconstruct_takes_a_config_a_mapping_or_keywords():
    A = ops.Operator(ops.volume((3, 12, 12)), ops.parallel(6, 18))
    y = A(torch.rand(3, 12, 12))
    a, record = reconstruct("sirt", y, A, config=SIRTConfig(iterations=3))
    b, _ = reconstruct("sirt", y, A, config={"iterations": 3})
    c, _ = reconstruct("sirt", y, A, iterations=3)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert record["config"] == {"iterations": 3} and record["method"] == "sirt"
    with pytest.raises(ValueError, match="expected a SIRTConfig"):
        reconstruct("sirt", y, A, config=DDSConfig())
    with pytest.raises(ValueError, match="not both"):
        reconstruct("sirt", y, A, config=SIRTConfig(), iterations=3)
    steps = []
    reconstruct("sirt", y, A, config=SIRTConfig(iterations=4), callback=lambda *_: steps.append(1))
    assert len(steps) == SIRTConfig(iterations=4).steps
