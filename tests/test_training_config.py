"""Training config: presets, YAML round trip, validation with clear messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ctblend.training import PRESETS, Phase, TrainConfig, load_config


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_round_trip(tmp_path, name):
    cfg = load_config(name)
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    assert TrainConfig.from_yaml(path) == cfg
    assert load_config(path) == cfg
    for phase in cfg.phases:
        assert phase.crop is None or phase.crop % cfg.unet.size_multiple == 0
    assert cfg.phases[-1].crop is None, "the last phase trains at full size"


def test_kind_sets_unet_channels():
    assert (
        load_config("tiny", kind="blend").unet.in_channels,
        load_config("tiny", kind="blend").unet.out_channels,
    ) == (3, 1)
    cfg = load_config("tiny", kind="slice2d")
    assert (cfg.unet.in_channels, cfg.unet.out_channels) == (1, 1)
    assert cfg.replace(kind="blend++").unet.out_channels == 3


def test_phases_and_steps():
    cfg = TrainConfig(image_size=64, phases=(Phase(10, 32, batch_size=4), Phase(5)), batch_size=2)
    assert cfg.total_steps == 15
    assert [cfg.phase_at(s).crop for s in (0, 9, 10, 14, 20)] == [32, 32, None, None, None]
    assert [cfg.batch_size_at(s) for s in (0, 10)] == [4, 2]
    assert [cfg.phase_end(s) for s in (0, 9, 10, 14)] == [10, 10, 15, 15]


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(kind="blend3d"), "unknown prior kind"),
        (dict(phases=[{"steps": 5, "crop": 12}]), "crop 12 must be a multiple of 8"),
        (dict(phases=[{"steps": 5, "crop": 256}]), "at most image_size"),
        (dict(phases=[]), "at least one training phase"),
        (dict(image_size=100), "not a multiple of 8"),
        (dict(ema_decay=1.0), "ema_decay"),
        (dict(precision="fp8"), "precision"),
        (dict(learning_rate=1e-3), "unknown training config keys"),
    ],
)
def test_invalid_configs(changes, match):
    with pytest.raises(ValueError, match=match):
        load_config("cpu128").replace(**changes)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("kind: blend++\nbatch_sise: 4\n")
    with pytest.raises(
        ValueError, match=r"bad\.yaml: unknown training config keys \['batch_sise'\]"
    ):
        load_config(path)
    with pytest.raises(ValueError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_data_scaling_is_a_record_of_the_one_scaling_ctblend_implements(tmp_path):
    """Red before: TrainConfig accepted any DataScaling and checkpoints recorded it, while the
    datasets, trainer and sampler always used HU [−1024, 3071] → [0, 1] → [−1, 1]."""
    from ctblend.data.scaling import hu_to_unit
    from ctblend.priors.loading import DataScaling, read_spec

    scaling = DataScaling()
    # the record states what the data path does: −1024 HU → 0 → −1, 3071 HU → 1 → +1
    low, high = scaling.network_range
    assert float(hu_to_unit(np.float32(scaling.hu_min))) * (high - low) + low == -1.0
    assert float(hu_to_unit(np.float32(scaling.hu_max))) * (high - low) + low == 1.0
    for bad in ({"hu_min": -1000.0}, {"hu_max": 2000.0}, {"network_range": (0.0, 1.0)}):
        with pytest.raises(ValueError, match="implements only the protocol's scaling"):
            TrainConfig(data_scaling=DataScaling(**bad))
    prior = tmp_path / "prior"
    prior.mkdir()
    shipped = Path(__file__).resolve().parents[1] / "ctblend/weights/slice2d_cpu128/config.json"
    record = json.loads(shipped.read_text())
    record["data_scaling"]["hu_min"] = -1000.0
    (prior / "config.json").write_text(json.dumps(record))
    (prior / "weights.safetensors").write_bytes(b"")  # never read: the record fails first
    with pytest.raises(ValueError, match="implements only"):
        read_spec(prior)
