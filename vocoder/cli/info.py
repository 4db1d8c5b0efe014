"""`vocoder info`: size and cost of a model, from a preset, a config, a checkpoint or a run
folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from vocoder.checkpoint import EXPORT_FORMAT, latest_checkpoint, load_model
from vocoder.config import load_mapping
from vocoder.errors import InputError
from vocoder.files import TORCH_SUFFIXES
from vocoder.importers import resolve_checkpoint
from vocoder.models import build_model, list_model_presets, resolve_model_config
from vocoder.models.config import ModelConfig
from vocoder.pretrained import list_models, resolve_model_path
from vocoder.train.config import load_experiment_config
from vocoder.train.run_dir import CONFIG_FILE

WEIGHT_FILES = (*TORCH_SUFFIXES, ".safetensors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "model presets:\n" + "\n".join(f"  {n}" for n in list_model_presets())
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a model preset (listed below), a pretrained model's name (see 'vocoder models'), "
        "a YAML/JSON config (a model config, or an experiment config such as a recipe's), a .pt "
        "checkpoint, a training run folder (its latest checkpoint) or a .safetensors file "
        "with its .json beside it",
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
            "audio",
            f"{config.sample_rate} Hz, hop {config.hop_length} samples "
            f"({config.hop_length / config.sample_rate * 1000:.1f} ms per mel frame)",
        ),
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
    source = args.model
    presets = list_model_presets()
    looks_like_a_name = not Path(source).suffix and "/" not in source
    if looks_like_a_name and not Path(source).exists() and source not in presets:
        pretrained = [e.name for e in list_models()]
        if source not in pretrained:
            raise InputError(
                source,
                f"no such file, model preset ({', '.join(presets)}) or pretrained model "
                f"({', '.join(pretrained)})",
            )
        source = resolve_model_path(source)
    if Path(source).is_dir():
        source = _run_folder_source(Path(source))
    source = resolve_checkpoint(source)
    if Path(source).suffix.lower() in WEIGHT_FILES:
        # built and loaded, so weights that do not fit their config are an error here too
        config = load_model(source)[0].config
    elif _is_experiment_config(Path(source)):
        # checked whole, as `train` would, and the mel fields taken from its features
        config = load_experiment_config(source).model
    else:
        config = resolve_model_config(source)
    lines = describe(config)
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        print(f"{label:<{width}}  {value}")
    return 0


def _is_experiment_config(path: Path) -> bool:
    """A training config (sections besides `model:`), not a model config alone."""
    if not path.is_file() or path.suffix.lower() not in (".yaml", ".yml", ".json"):
        return False
    data = load_mapping(path)
    if not isinstance(data, dict) or data.get("format") == EXPORT_FORMAT:  # an export's JSON
        return False
    return any(section in data for section in ("features", "data", "train"))


def _run_folder_source(folder: Path) -> Path:
    """A run folder's latest checkpoint, or its config.yaml before the first checkpoint."""
    latest = latest_checkpoint(folder)
    if latest is not None:
        return latest
    if (folder / CONFIG_FILE).is_file():
        return folder / CONFIG_FILE
    raise InputError(folder, f"a folder without checkpoints (step-*.pt) or {CONFIG_FILE}")
