"""Checkpoints and exported models: the one place that writes and reads model files.

Two kinds of file:

- A training checkpoint `<run>/checkpoints/step-XXXXXXXX.pt` (torch.save of plain data,
  readable with `weights_only=True`): {"format", "version", "config" (the resolved experiment
  config: "features", "model", "data", "train"), "model" (state dict), "ema" (state dict or
  None), "optimizer", "scheduler", "scaler", "step", "epoch", "batch_in_epoch", "world_size"
  (processes; absent before it was recorded), "rng"}.
- An exported model `<stem>.safetensors` (weights only, no pickle) with `<stem>.json` beside
  it: {"format", "version", "form" ("training": weight norm kept; "inference": folded),
  "model": ModelConfig, "features": MelConfig, "metadata": {...}, "weights_sha256"}.

Corruption is caught at load: a checkpoint's zip CRCs are checked, an export's sha256 is
compared with the one its JSON records (exports made before it was recorded, and the shipped
models, which the pretrained registry's sha256s check, load without it).

`load_model` reads either (or a run folder: its latest checkpoint) and rebuilds the model.
Every write is atomic (a temporary file in the same folder, then `os.replace`; a training
checkpoint is also fsynced first), so a kill leaves either the old file or the new one,
never half a file.

This module sits just above `models`: it imports models, features and config only, so
training, evaluation, inference, the CLI and the app can all load models through it.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import safetensors.torch
import torch

from vocoder.config import from_dict, to_dict
from vocoder.errors import ConfigError, InputError, first_line
from vocoder.features import MelConfig
from vocoder.files import (
    atomic_output,
    load_torch_file,
    read_export_json,
    refuse_existing,
    sha256_file,
)
from vocoder.models import FlowVocoder, ModelConfig, build_model, model_config_from_dict

CHECKPOINT_FORMAT = "vocoder-checkpoint"
EXPORT_FORMAT = "vocoder-model"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
_STEP_NAME = re.compile(r"^step-(\d+)\.pt$")

Weights = Literal["auto", "ema", "model"]


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says besides its weights."""

    model: ModelConfig
    features: MelConfig
    source: Path
    form: Literal["training", "inference"] = "training"
    step: int | None = None  # training step of a checkpoint (or of an export, when known)
    weights: str = "model"  # which weights were loaded: "model", "ema" or "average"
    metadata: dict[str, Any] = field(default_factory=dict)


# ---- training checkpoints ----


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of `step` lives in a run folder."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def list_checkpoints(path: str | Path) -> list[Path]:
    """A run folder's (or a checkpoints folder's) checkpoints, oldest step first."""
    path = Path(path)
    folder = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        match = _STEP_NAME.match(p.name)
        if match and p.is_file():
            found.append((int(match.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(path: str | Path) -> Path | None:
    """The newest checkpoint of a run folder, or None when it has none."""
    checkpoints = list_checkpoints(path)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(path: str | Path, state: dict[str, Any], overwrite: bool = False) -> Path:
    """Write a training checkpoint atomically; `state` must be plain data and tensors."""
    path = Path(path)
    state = {"format": CHECKPOINT_FORMAT, "version": VERSION, **state}
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (no arbitrary unpickling, zip CRCs checked); `InputError`
    when unusable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint")
    state = load_torch_file(path, "checkpoint", map_location)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, "not a vocoder training checkpoint")
    if state.get("version", 0) > VERSION:
        raise InputError(path, f"checkpoint version {state['version']} is newer than this toolkit")
    for key in ("config", "model", "step"):
        if key not in state:
            raise InputError(path, f"checkpoint lacks {key!r}")
    return state


def capture_rng_state() -> dict[str, Any]:
    """The python, numpy, torch and CUDA generator states, as checkpoint-safe plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo `capture_rng_state` (CUDA states only when the device count matches)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def average_checkpoints(paths: list[str | Path], key: str = "model") -> dict[str, torch.Tensor]:
    """The element-wise mean of the weights of several checkpoints of one model.

    As the reference code's `-a N`: floating tensors are averaged (in float64, then cast
    back), other tensors are taken from the last file. `key` picks "model" or "ema" weights
    of training checkpoints; exported `.safetensors` files may be mixed in.
    """
    if not paths:
        raise InputError("checkpoints", "nothing to average")
    total: dict[str, torch.Tensor] = {}
    reference: dict[str, torch.Tensor] = {}
    for path in paths:
        state, _ = _read_weights(Path(path), key)
        if reference and state.keys() != reference.keys():
            raise InputError(path, f"its weights do not match those of {Path(paths[0]).name}")
        for name, tensor in state.items():
            if reference and tensor.shape != reference[name].shape:
                raise InputError(
                    path,
                    f"{name} has shape {tuple(tensor.shape)}, expected "
                    f"{tuple(reference[name].shape)}",
                )
            if tensor.is_floating_point():
                total[name] = total.get(name, 0) + tensor.to(torch.float64)
        reference = state
    return {
        name: (total[name] / len(paths)).to(tensor.dtype) if tensor.is_floating_point() else tensor
        for name, tensor in reference.items()
    }


# ---- exported models ----


# Kept float32 when the network weights are stored at half size: the mel upsampler (its
# output feeds every layer) and WaveGlow's 1x1 convolutions (their log-determinants).
FLOAT32_MODULES = ("upsampler.", "invconvs.")


def cast_network_weights(model: FlowVocoder, dtype: torch.dtype) -> FlowVocoder:
    """Store the network's weight matrices in `dtype`, in place (for smaller exports).

    Bias vectors and the `FLOAT32_MODULES` stay float32.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and not name.startswith(FLOAT32_MODULES):
                param.data = param.data.to(dtype)
    return model


def export_model(
    model: FlowVocoder,
    config: MelConfig | Any,
    out_stem: str | Path,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    inputs: Iterable[str | Path] = (),
) -> tuple[Path, Path]:
    """Write `<out_stem>.safetensors` (weights) and `<out_stem>.json` (configs, metadata).

    `config` is the MelConfig the model was trained with, or anything carrying one as
    `.features` (a `ModelInfo`, an `ExperimentConfig`). The model is stored in the form it is
    in (training or inference, see `FlowVocoder.to_inference_form`). Metadata must be
    JSON-serialisable. Refuses to replace existing files unless `overwrite`, and to replace
    any of `inputs` (the files the model was made from) even then.
    """
    features = config if isinstance(config, MelConfig) else getattr(config, "features", None)
    if not isinstance(features, MelConfig):
        raise ConfigError("export_model: config must be a MelConfig or carry one as .features")
    out_stem = Path(out_stem)
    if out_stem.suffix in (".safetensors", ".json"):
        out_stem = out_stem.with_suffix("")
    weights_path = out_stem.parent / f"{out_stem.name}.safetensors"
    meta_path = out_stem.parent / f"{out_stem.name}.json"
    made_from = {Path(p).resolve() for p in inputs}
    for path in (weights_path, meta_path):
        if path.resolve() in made_from:
            raise InputError(path, "is a file this model is made from; write to another name")
    if not overwrite:
        refuse_existing([weights_path, meta_path])
    form = "inference" if model.inference_form else "training"
    document = {
        "format": EXPORT_FORMAT,
        "version": VERSION,
        "form": form,
        "model": to_dict(model.config),
        "features": to_dict(features),
        "metadata": dict(metadata or {}),
    }
    try:
        json.dumps(document)
    except TypeError as e:
        raise ConfigError(f"export_model: metadata is not JSON-serialisable ({e})") from None
    # clone: safetensors refuses tensors sharing storage
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_output(weights_path, overwrite=True) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata={"format": EXPORT_FORMAT})
        document["weights_sha256"] = sha256_file(tmp)  # checked at load: no silent corruption
    # The JSON goes last: a weights file without its JSON is never taken for a finished export.
    with atomic_output(meta_path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return weights_path, meta_path


# ---- loading models, whatever the file ----


def load_model(
    path: str | Path, device: str | torch.device = "cpu", weights: Weights = "auto"
) -> tuple[FlowVocoder, ModelInfo]:
    """A model in eval mode on `device`, and what its file says about it.

    `path`: a training checkpoint (`.pt`), an export (`.safetensors` or its `.json`), or a
    run folder (its latest checkpoint). `weights`: "auto" takes the EMA weights when the
    checkpoint has them, else the trained ones; "ema" or "model" insists (an export holds
    one set: asking for the other is an error).
    """
    path = _resolve(Path(path))
    state, info = _read_weights(path, weights)
    model = _build(info)
    _load_state(model, state, path)
    return model.to(device).eval(), info


def load_averaged_model(
    paths: list[str | Path], device: str | torch.device = "cpu", weights: Weights = "model"
) -> tuple[FlowVocoder, ModelInfo]:
    """A model whose weights are the mean of several checkpoints' (see `average_checkpoints`).

    The configs come from the last path; all must be checkpoints of the same model.
    """
    if not paths:
        raise InputError("checkpoints", "nothing to average")
    last = _resolve(Path(paths[-1]))
    _, info = _read_weights(last, weights)
    key = info.weights  # the weights the last file resolved to, for every file
    state = average_checkpoints([_resolve(Path(p)) for p in paths], key=key)
    model = _build(info)
    _load_state(model, state, last)
    names = [Path(p).name for p in paths]
    info = ModelInfo(
        model=info.model,
        features=info.features,
        source=last,
        form=info.form,
        step=info.step,
        weights="average",
        metadata={**info.metadata, "averaged": names},
    )
    return model.to(device).eval(), info


def _resolve(path: Path) -> Path:
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise InputError(path, "a folder without checkpoints (step-*.pt)")
        return latest
    if path.suffix == ".json":
        weights = path.with_suffix(".safetensors")
        if path.is_file() and not weights.exists():
            if _json_format(path) == EXPORT_FORMAT:
                raise InputError(path, f"its weights {weights.name} are missing beside it")
            raise InputError(path, f"no weights beside it ({weights.name}): not a model's JSON")
        return weights
    if not path.exists():
        raise InputError(path, "no such file")
    return path


def _json_format(path: Path) -> Any:
    """The `format` a JSON file states, or None (unreadable, or no mapping)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document.get("format") if isinstance(document, dict) else None


def _read_weights(path: Path, weights: str) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    if path.suffix == ".safetensors":
        state, info = _read_export(path)
        recorded = info.metadata.get("weights")  # exports made before it was recorded: unknown
        if weights in ("ema", "model") and recorded in ("ema", "model") and recorded != weights:
            kind = "EMA" if info.weights == "ema" else "trained (not EMA)"
            raise InputError(
                path,
                f"an export holds one set of weights, its {kind} ones; {weights} weights "
                "are chosen from a training checkpoint",
            )
        return state, info
    state = load_checkpoint(path)
    config = state["config"]
    if not isinstance(config, dict):
        raise InputError(path, "checkpoint config is not a mapping")
    if weights == "ema" and state.get("ema") is None:
        raise InputError(path, "checkpoint has no EMA weights (trained without ema_decay)")
    key = "ema" if weights == "ema" or (weights == "auto" and state.get("ema")) else "model"
    info = ModelInfo(
        model=_model_config(config.get("model"), path),
        features=_features(config.get("features"), path),
        source=path,
        form="training",
        step=int(state["step"]),
        weights=key,
        metadata={
            "train": config.get("train", {}),
            "train_ids": state.get("train_ids"),
            "started_from": state.get("started_from"),
        },
    )
    return state[key], info


def _read_export(path: Path) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    if not path.is_file():
        raise InputError(path, "no such file")
    meta_path, document = read_export_json(path)
    form = document.get("form", "training")
    if form not in ("training", "inference"):
        raise InputError(meta_path, f"unknown form {form!r} (training or inference)")
    recorded = document.get("weights_sha256")
    if recorded is not None and sha256_file(path) != recorded:
        raise InputError(
            path, f"corrupt: its sha256 differs from the one {meta_path.name} records at export"
        )
    try:
        state = safetensors.torch.load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise InputError(path, f"not a readable safetensors file ({first_line(e)})") from None
    metadata = document.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InputError(meta_path, "metadata must be a JSON object")
    step = metadata.get("step")
    info = ModelInfo(
        model=_model_config(document.get("model"), meta_path),
        features=_features(document.get("features"), meta_path),
        source=path,
        form=form,
        step=int(step) if isinstance(step, int) else None,
        weights="ema" if metadata.get("weights") == "ema" else "model",
        metadata=metadata,
    )
    return state, info


def _build(info: ModelInfo) -> FlowVocoder:
    model = build_model(info.model)
    return model.to_inference_form() if info.form == "inference" else model


def _load_state(model: FlowVocoder, state: dict[str, torch.Tensor], path: Path) -> None:
    mismatch = weights_mismatch(model.state_dict(), state)
    if mismatch:
        raise InputError(path, f"weights do not fit the model its config describes: {mismatch}")
    model.load_state_dict(state, strict=True)
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(path, f"weights contain NaN or infinite values ({name})")


def weights_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """One line saying how the weights `found` differ from those a model `expected` (the
    first differing tensor and how many more), or "" when they fit."""
    problems = []
    for name, tensor in expected.items():
        if name not in found:
            problems.append(f"{name} {tuple(tensor.shape)} is missing")
        elif tuple(found[name].shape) != tuple(tensor.shape):
            problems.append(
                f"{name} has shape {tuple(found[name].shape)}, the model's is {tuple(tensor.shape)}"
            )
    problems += [f"{name} is not a weight of this model" for name in found if name not in expected]
    if not problems:
        return ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def _model_config(data: Any, source: Path) -> ModelConfig:
    if not isinstance(data, dict):
        raise InputError(source, "no 'model' config in it")
    try:
        return model_config_from_dict(data)
    except ConfigError as e:
        raise InputError(source, f"bad model config ({e})") from None


def _features(data: Any, source: Path) -> MelConfig:
    if not isinstance(data, dict):
        raise InputError(source, "no 'features' (mel) config in it")
    try:
        return from_dict(MelConfig, data, "features")
    except ConfigError as e:
        raise InputError(source, f"bad features config ({e})") from None


# what an import records of the published file its weights came from
PROVENANCE = ("imported_from", "source_file", "source_sha256")


def lineage(metadata: dict[str, Any]) -> dict[str, Any]:
    """What a model's weights carry into a model trained from them, or an export of them:
    where they were first published (an import's origin, file and digest) and every clip
    they have been trained on (their run's `train_ids`, and those of the weights that run
    began from: its `started_from`)."""
    earlier = metadata.get("started_from") or {}
    carried = {k: metadata[k] for k in PROVENANCE if k in metadata}
    carried = carried or {k: earlier[k] for k in PROVENANCE if k in earlier}
    ids = set(metadata.get("train_ids") or ()) | set(earlier.get("train_ids") or ())
    if ids:
        carried["train_ids"] = sorted(ids)
    return carried


__all__ = [
    "ModelInfo",
    "PROVENANCE",
    "lineage",
    "checkpoint_path",
    "list_checkpoints",
    "latest_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "weights_mismatch",
    "capture_rng_state",
    "restore_rng_state",
    "average_checkpoints",
    "export_model",
    "load_model",
    "load_averaged_model",
]
