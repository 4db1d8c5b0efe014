"""From configs to models: building, presets and resolving what a user points at.

Presets are the YAML files shipped in `vocoder/configs/` (one per reference model);
`resolve_model_config` is the one place that turns a preset name, a YAML/JSON config or a
checkpoint into a `ModelConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocoder.config import from_dict, load_mapping, to_dict
from vocoder.errors import ConfigError, InputError
from vocoder.files import TORCH_SUFFIXES, load_torch_file, read_export_json
from vocoder.models.base import FlowVocoder
from vocoder.models.config import ModelConfig
from vocoder.models.nanoflow import NanoFlow
from vocoder.models.waveflow import WaveFlow
from vocoder.models.waveglow import NanoFlowGlow, WaveGlow

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"

MODEL_CLASSES: dict[str, type[FlowVocoder]] = {
    "waveflow": WaveFlow,
    "nanoflow": NanoFlow,
    "waveglow": WaveGlow,
    "nanoflow-glow": NanoFlowGlow,
}


def build_model(config: ModelConfig) -> FlowVocoder:
    """A freshly initialised model (training form) for `config`, in float32 whatever
    torch's default dtype (a caller's float64 default made float64 weights)."""
    config.validate()
    return MODEL_CLASSES[config.family](config).float()


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """A validated `ModelConfig` from plain data (the `model:` section of a config)."""
    return from_dict(ModelConfig, data, "model")


def list_model_presets() -> list[str]:
    """Names of the shipped model configs, e.g. "waveflow-h16-r64"."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_model_preset(name: str) -> ModelConfig:
    """The shipped config `vocoder/configs/<name>.yaml`."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown model preset {name!r}; known: {', '.join(list_model_presets())}"
        )
    return _model_section(load_mapping(path), path)


def model_config_from_section(section: dict[str, Any]) -> ModelConfig:
    """`{preset: NAME, field: value...}` (the preset, fields overridden) or plain fields."""
    section = dict(section)
    name = section.pop("preset", None)
    if name is not None:
        if not isinstance(name, str):
            raise ConfigError(f"model.preset: expected a preset name, got {name!r}")
        section = {**to_dict(load_model_preset(name)), **section}
    return model_config_from_dict(section)


def _model_section(data: dict[str, Any], source: str | Path) -> ModelConfig:
    """The `model:` section of a full config, or the whole mapping if it is a model config."""
    section = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise InputError(source, "no 'model' mapping in it")
    if not section:  # every field has a default: {} would describe a model nobody chose
        raise InputError(source, "no model settings in it")
    try:
        return model_config_from_section(section)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def resolve_model_config(path_or_name: str | Path) -> ModelConfig:
    """The model config behind a preset name, a YAML/JSON config or a checkpoint.

    - a preset name (see `list_model_presets`);
    - a `.yaml`/`.yml`/`.json` file: a model config, or a full config with a `model:` section;
    - a `.pt`/`.pth`/`.ckpt` checkpoint: a dict whose "config" holds `{"model": {...}}`;
    - a `.safetensors` file: the model section of the `.json` of the same stem beside it.
    """
    path = Path(path_or_name)
    if not path.exists():
        if path.suffix == "" and str(path_or_name) in list_model_presets():
            return load_model_preset(str(path_or_name))
        raise InputError(
            path, f"no such file, and not a model preset ({', '.join(list_model_presets())})"
        )
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml", ".json"):
        return _model_section(load_mapping(path), path)
    if suffix == ".safetensors":
        meta, document = read_export_json(path)
        return _model_section(document, meta)
    if suffix in TORCH_SUFFIXES:
        checkpoint = load_torch_file(path, "checkpoint")
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("config"), dict):
            raise InputError(path, "checkpoint has no 'config' mapping")
        return _model_section(checkpoint["config"], path)
    raise InputError(path, "expected a .yaml/.json config, a .pt checkpoint or a .safetensors")


__all__ = [
    "build_model",
    "model_config_from_dict",
    "model_config_from_section",
    "list_model_presets",
    "load_model_preset",
    "resolve_model_config",
    "MODEL_CLASSES",
]
