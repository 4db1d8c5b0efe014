"""Flow vocoders: WaveFlow, NanoFlow, WaveGlow and NanoFlow-Glow, built from a `ModelConfig`."""

from vocoder.models.base import FlowVocoder, ReceptiveField
from vocoder.models.config import ModelConfig
from vocoder.models.registry import (
    build_model,
    list_model_presets,
    load_model_preset,
    model_config_from_dict,
    resolve_model_config,
)

__all__ = [
    "FlowVocoder",
    "ReceptiveField",
    "ModelConfig",
    "build_model",
    "list_model_presets",
    "load_model_preset",
    "model_config_from_dict",
    "resolve_model_config",
]
