"""Typed configs: unknown keys, wrong types and overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from vocoder.config import apply_overrides, differences, from_dict, load_mapping, to_dict
from vocoder.errors import ConfigError
from vocoder.features import MelConfig


@dataclass
class Inner:
    size: int = 4
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str = "x"
    rate: float = 1.0
    inner: Inner = field(default_factory=Inner)
    sizes: list[int] = field(default_factory=list)
    limit: int | None = None

    def validate(self):
        if self.inner.size > 100:
            raise ConfigError("inner.size must be at most 100")


def test_round_trip_and_coercion():
    cfg = from_dict(Outer, {"rate": 2, "inner": {"mode": "b"}, "sizes": [1, 2], "limit": None})
    assert cfg.rate == 2.0 and isinstance(cfg.rate, float)
    assert cfg.inner == Inner(size=4, mode="b")
    assert from_dict(Outer, to_dict(cfg)) == cfg
    assert from_dict(Outer, {"rate": "2e-4"}).rate == 2e-4  # YAML 1.1 reads 2e-4 as a string


@pytest.mark.parametrize(
    "data, message",
    [
        ({"nmae": "y"}, "unknown key"),
        ({"inner": {"size": "big"}}, "inner.size: expected an integer"),
        ({"inner": {"mode": "c"}}, "inner.mode"),
        ({"sizes": 3}, "sizes: expected a list"),
        ({"inner": {"size": 1000}}, "at most 100"),
        ({"rate": True}, "rate: expected a number"),
        ({"rate": "fast"}, "rate: expected a number"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_overrides_and_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: y\ninner:\n  size: 3\n")
    data = apply_overrides(load_mapping(path), ["inner.size=7", "sizes=[1, 2]", "limit=null"])
    cfg = from_dict(Outer, data)
    assert cfg.inner.size == 7 and cfg.sizes == [1, 2] and cfg.limit is None
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["oops"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_mapping(tmp_path / "missing.yaml")


def test_mel_config_validates_on_load():
    assert from_dict(MelConfig, {"hop_length": 256}) == MelConfig()
    with pytest.raises(ConfigError, match="fmax"):
        from_dict(MelConfig, {"sample_rate": 8000})


def test_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "conf.yaml"
    path.write_text("train:\n  lr: 1.0e-3\n  max_steps: 10\n  lr: 1.0e-4\n")
    with pytest.raises(ConfigError, match=r"conf.yaml: .*duplicate key 'lr' at line 4"):
        load_mapping(path)


# ---- the mel convention of an experiment: stated once, in features ----


def experiment(features: dict, model: dict) -> dict:
    return {
        "features": features,
        "model": {"preset": "waveflow-h16-r64", "n_group": 12, **model},
        "data": {"train": "train.txt", "segment_length": 16200},
    }


def test_model_takes_the_mel_convention_from_features():
    from vocoder.train.config import experiment_config_from_dict

    config = experiment_config_from_dict(
        experiment(
            {"sample_rate": 24000, "hop_length": 300, "n_fft": 2048, "n_mels": 100},
            {},
        )
    )
    m = config.model
    assert (m.sample_rate, m.hop_length, m.n_mels, m.strides) == (24000, 300, 100, (15, 20))


def test_model_stating_another_mel_setting_is_one_line_error():
    from vocoder.train.config import experiment_config_from_dict

    # the same value (as a run folder's saved config states it) is accepted
    same = experiment_config_from_dict(experiment({"hop_length": 300}, {"hop_length": 300}))
    assert same.model.hop_length == 300
    with pytest.raises(ConfigError) as caught:
        experiment_config_from_dict(
            experiment({"hop_length": 300}, {"hop_length": 256}), "conf.yaml"
        )
    message = str(caught.value)
    assert message == (
        "conf.yaml: model.hop_length 256 conflicts with features.hop_length 300: state the mel "
        "convention once, in features (drop model.hop_length)"
    )


def test_saved_configs_of_old_runs_still_load(tmp_path):
    """A run folder's config.yaml states the model's mel fields (as every saved config
    did); it loads unchanged, and so does its model section on its own."""
    from vocoder.models.registry import model_config_from_dict
    from vocoder.train.config import experiment_to_dict, load_experiment_config

    conf = Path(__file__).parents[1] / "recipes/custom_voice/conf/waveflow-24k-hop300.yaml"
    config = load_experiment_config(conf)
    saved = experiment_to_dict(config)
    assert saved["model"]["hop_length"] == 300 and saved["model"]["sample_rate"] == 24000
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved))
    assert load_experiment_config(path) == config
    assert model_config_from_dict(saved["model"]) == config.model


def test_differences_are_dotted_keys_with_both_values():
    there = {"model": {"channels": 64, "n_flows": 8}, "seed": 1, "gone": True}
    here = {"model": {"channels": 32, "n_flows": 8}, "seed": 1, "new": "x"}
    assert differences(there, here) == [
        "gone (True there, None here)",
        "model.channels (64 there, 32 here)",
        "new (None there, 'x' here)",
    ]
    assert differences(here, here) == []
    # a mapping against a value is one difference, not a walk
    assert differences({"a": {"b": 1}}, {"a": 2}) == ["a ({'b': 1} there, 2 here)"]
