"""`vocoder info`: size and cost of a model, from a preset, a config or a checkpoint."""

from __future__ import annotations

import argparse

from vocoder.models import build_model, list_model_presets, resolve_model_config
from vocoder.models.config import ModelConfig

HELP = "parameter counts, receptive field and FLOPs of a config or checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="CONFIG_OR_CHECKPOINT_OR_PRESET",
        help=(
            "a model preset (" + ", ".join(list_model_presets()) + "), a YAML/JSON config, "
            "a .pt checkpoint or a .safetensors file with its .json beside it"
        ),
    )


def describe(config: ModelConfig) -> list[tuple[str, str]]:
    """(label, value) lines describing the model `config` builds."""
    model = build_model(config)
    inference = model.to_inference_form()
    field = model.receptive_field()
    seconds = field.samples / config.sample_rate
    flops = inference.flops_per_sample()
    if field.rows:
        reach = f"{field.rows} rows x {field.columns} columns per flow"
    else:
        reach = f"{field.columns} groups of {config.n_group} samples per flow"
    lines = [
        ("family", config.family + (f" ({config.sharing})" if config.is_nanoflow else "")),
        (
            "shape",
            f"{config.n_flows} flows x {config.n_layers} layers, {config.channels} channels, "
            f"n_group {config.n_group}, {config.coupling} coupling",
        ),
        ("parameters (training)", f"{model.parameter_count():,}"),
        ("parameters (inference)", f"{inference.parameter_count():,}"),
        (
            "receptive field",
            f"{reach}; {field.samples:,} samples ({seconds * 1000:.0f} ms) for the whole model",
        ),
        (
            "FLOPs per sample",
            f"{flops / 1e6:.2f} M ({flops * config.sample_rate / 1e12:.3f} TFLOP per second "
            "of audio, one forward pass)",
        ),
    ]
    return lines


def run(args: argparse.Namespace) -> int:
    config = resolve_model_config(args.model)
    lines = describe(config)
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        print(f"{label:<{width}}  {value}")
    return 0
