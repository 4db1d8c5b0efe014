"""`ExperimentConfig`: everything a training run needs, in one typed, validated config.

A config file has four sections:

```yaml
features: {preset: tacotron2}             # a MelConfig preset, fields overridable
model: {preset: waveflow-h16-r64}         # a model preset (vocoder/configs), fields overridable
data: {prepared: data/ljspeech}           # or train/valid/test filelists
train: {max_steps: 1000000, lr: 1.0e-3}
```

The mel convention (sample_rate, hop_length, n_mels) is stated once, in `features`; the
model's copies of those three (`MEL_FIELDS`) are derived from it on load. A `model`
section may still state them (a run folder's saved config does) but only with the same
values: a different one is a `ConfigError`.

`preset` keys are resolved on load; the run folder keeps the fully resolved config
(`config.yaml`, no presets), so a run never changes when a shipped preset does.
Relative data paths are resolved against the working directory at load time.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vocoder.config import apply_overrides, from_dict, load_mapping, to_dict
from vocoder.errors import ConfigError
from vocoder.features import PRESETS, MelConfig
from vocoder.models.config import ModelConfig
from vocoder.models.registry import model_config_from_section
from vocoder.pretrained import names_a_path
from vocoder.sigma import DEFAULT_SIGMA, check_sigma

SECTIONS = ("features", "model", "data", "train")
# The model fields that copy the mel convention: taken from `features`, never stated apart.
MEL_FIELDS = ("sample_rate", "hop_length", "n_mels")


@dataclass
class DataConfig:
    """Where the audio comes from and how it is cut into training batches."""

    # a folder written by `vocoder prepare` (train.txt, valid.txt, test.txt); the
    # filelists below, when given, take precedence over its lists
    prepared: str | None = None
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    # The reference's 16000-sample segments rounded to whole hops (63 x 256): a segment's
    # mel is then an exact slice of the utterance's mel.
    segment_length: int = 16128
    batch_size: int = 8  # per process; under DDP the global batch is batch_size x world
    num_workers: int = 2
    # TTS-predicted mels (`<stem>.npy`, natural-log, [n_mels, frames]) to train on instead
    # of mels computed from the audio (fine-tuning on a TTS model's outputs)
    mel_dir: str | None = None
    valid_max_files: int = 16  # whole validation utterances scored for the valid LL
    valid_audio_clips: int = 2  # of those, clips synthesized for TensorBoard

    def validate(self) -> None:
        if self.prepared is None and self.train is None:
            raise ConfigError("data: give `prepared` (a `vocoder prepare` folder) or `train`")
        for name in ("segment_length", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be positive, got {getattr(self, name)}")
        for name in ("num_workers", "valid_max_files", "valid_audio_clips"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name} must not be negative, got {getattr(self, name)}")

    def filelist(self, part: Literal["train", "valid", "test"]) -> Path | None:
        """The filelist of `part`: the explicit one, else the prepared folder's, else None."""
        explicit = getattr(self, part)
        if explicit is not None:
            return Path(explicit)
        if self.prepared is not None:
            path = Path(self.prepared) / f"{part}.txt"
            return path if part == "train" or path.is_file() else None
        return None


# numpy's generators refuse a negative seed; the upper bound is a chosen one, far below
# torch's 2^64 however many epochs or validation clips are added to it
SEED_LIMIT = 2**32


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision and bookkeeping of a run."""

    max_steps: int = 1_000_000
    lr: float = 1e-3
    lr_halve_every: int = 200_000  # StepLR, gamma 0.5, as the reference code
    grad_clip: float | None = 5.0  # gradient-norm clip; None: off
    # auto: bf16 autocast on a CPU with bf16 units (vocoder/precision.py), else fp32 (GPUs
    # included); there bf16 trains 1.4-2x faster and scores as fp32 does at equal steps
    # (bench/train_precision.py). fp16 uses a GradScaler (CUDA only)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    ema_decay: float | None = None  # exponential moving average of the weights; None: off
    log_every: int = 100
    valid_every: int = 10_000
    checkpoint_every: int = 10_000
    keep_last: int = 5  # checkpoints kept; older ones deleted (0: keep all)
    seed: int = 1234
    init_from: str | None = None  # weights to start from (fine-tuning): .pt or .safetensors
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    valid_sigma: float = DEFAULT_SIGMA  # prior temperature of the validation clips synthesized

    def validate(self) -> None:
        positive = ("max_steps", "lr_halve_every", "log_every", "valid_every", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"train.lr must be a finite number above 0, got {self.lr}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"train.grad_clip must be positive or null, got {self.grad_clip}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1) or null, got {self.ema_decay}")
        if self.keep_last < 0:
            raise ConfigError(f"train.keep_last must not be negative, got {self.keep_last}")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ConfigError(f"train.seed must be in [0, 2^32), got {self.seed}")
        check_sigma(self.valid_sigma, "train.valid_sigma")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device}")


@dataclass
class ExperimentConfig:
    """A training run: mel convention, model, data and optimisation, checked together."""

    features: MelConfig
    model: ModelConfig
    data: DataConfig
    train: TrainConfig

    def validate(self) -> None:
        f, m, d = self.features, self.model, self.data
        for name in MEL_FIELDS:  # derived on load; checked for configs built in code
            if getattr(m, name) != getattr(f, name):
                raise ConfigError(
                    f"model.{name} {getattr(m, name)} != features.{name} {getattr(f, name)}"
                )
        if d.segment_length % f.hop_length:
            below = d.segment_length // f.hop_length * f.hop_length
            raise ConfigError(
                f"data.segment_length {d.segment_length} is not a multiple of hop_length "
                f"{f.hop_length} (try {below} or {below + f.hop_length})"
            )
        if d.segment_length % m.n_group:
            raise ConfigError(
                f"data.segment_length {d.segment_length} is not a multiple of "
                f"model.n_group {m.n_group}"
            )
        if self.train.precision == "fp16" and self.train.device == "cpu":
            raise ConfigError("train.precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")


def experiment_config_from_dict(data: dict[str, Any], where: str = "") -> ExperimentConfig:
    """Resolve presets, build and validate an `ExperimentConfig` from plain data."""
    prefix = f"{where}: " if where else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}expected a mapping with {', '.join(SECTIONS)}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{prefix}unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}"
        )
    try:
        features = _features(data.get("features"))
        config = ExperimentConfig(
            features=features,
            model=_model(data.get("model"), features),
            data=from_dict(DataConfig, _section(data, "data"), "data"),
            train=from_dict(TrainConfig, _section(data, "train"), "train"),
        )
        config.validate()
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}") from None
    return config


def load_experiment_config(
    path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None
) -> ExperimentConfig:
    """Read a config file (or start from `base`), apply `a.b=value` overrides, resolve, check.

    Relative data paths become absolute (against the working directory).
    """
    data = copy.deepcopy(base) if base is not None else load_mapping(path)
    overrides = list(overrides or [])
    apply_overrides(data, overrides)
    try:
        config = experiment_config_from_dict(data)
    except ConfigError as e:
        # an override's mistake is the command line's, not the file's
        blamed = next((o for o in overrides if _concerns(str(e), o)), None)
        where = f"override {blamed}" if blamed else (str(path) if path is not None else "")
        if not blamed and overrides:  # the file and the command line together
            where += f" with {' '.join(overrides)}" if where else f"with {' '.join(overrides)}"
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None
    return absolute_data_paths(config)


def _concerns(message: str, override: str) -> bool:
    """Whether a config error is about the key `override` (`a.b=value`) sets."""
    key = override.split("=", 1)[0].strip()
    section, _, name = key.partition(".")
    if re.match(rf"{re.escape(key)}\b(?![.\w])", message):  # "train.lr: expected a number"
        return True
    # the part before ";" names the culprits, the rest lists what is known
    if re.match(rf"unknown section\(s\) [^;]*\b{re.escape(section)}\b", message):
        return True
    # "train: unknown key(s) lrr; ...", "model: hop_length 256 must be a multiple of n_group 7"
    return (
        bool(name)
        and re.match(rf"{re.escape(section)}: [^;]*\b{re.escape(name)}\b", message) is not None
    )


def absolute_data_paths(config: ExperimentConfig) -> ExperimentConfig:
    """The config with its data and init paths made absolute (in place; returned); an
    init_from that is no path is a pretrained model's name (`names_a_path`)."""
    d = config.data
    for name in ("prepared", "train", "valid", "test", "mel_dir"):
        value = getattr(d, name)
        if value is not None:
            setattr(d, name, os.path.abspath(os.path.expanduser(value)))
    init_from = config.train.init_from
    if init_from and names_a_path(os.path.expanduser(init_from)):
        config.train.init_from = os.path.abspath(os.path.expanduser(init_from))
    return config


def experiment_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain data (what `config.yaml` in a run folder holds)."""
    return to_dict(config)


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    section = data.get(name)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{name}: expected a mapping, got {section!r}")
    return dict(section)


def _features(data: dict[str, Any] | None) -> MelConfig:
    """`{preset: NAME, field: value...}` or plain MelConfig fields (preset tacotron2)."""
    section = _section({"features": data}, "features")
    name = section.pop("preset", "tacotron2")
    if name not in PRESETS:
        raise ConfigError(f"features.preset: unknown {name!r}; known: {', '.join(PRESETS)}")
    merged = {**to_dict(PRESETS[name]), **section}
    return from_dict(MelConfig, merged, "features")


def _model(data: dict[str, Any] | None, features: MelConfig) -> ModelConfig:
    """`{preset: NAME, field: value...}` or plain ModelConfig fields; the mel fields
    (`MEL_FIELDS`) come from `features`, and a model section that states another value
    for one of them is refused."""
    section = _section({"model": data}, "model")
    for name in MEL_FIELDS:
        wanted = getattr(features, name)
        if name in section and section[name] != wanted:
            raise ConfigError(
                f"model.{name} {section[name]!r} conflicts with features.{name} {wanted!r}: "
                f"state the mel convention once, in features (drop model.{name})"
            )
        section[name] = wanted
    return model_config_from_section(section)


__all__ = [
    "MEL_FIELDS",
    "DataConfig",
    "TrainConfig",
    "ExperimentConfig",
    "experiment_config_from_dict",
    "load_experiment_config",
    "absolute_data_paths",
    "experiment_to_dict",
]
