"""Published checkpoints of other codebases, converted into this toolkit's models.

Formats read (detected from the file's contents, never by running its pickle):
- the NanoFlow reference code (L0SG/NanoFlow): WaveFlow, NanoFlow full/decomp/naive,
  affine or RQ-NSF, any h (`l0sg`);
- NVIDIA's WaveGlow: training checkpoints (the pickled module, with or without weight norm,
  zip or legacy serialization) and torch.hub / NGC state-dict checkpoints (`nvidia`).

`import_checkpoint` converts one into a training-form model (so `train.init_from` can
fine-tune it and `vocoder export` gives the inference form) and `write_imported` stores it
as `<stem>.safetensors` + `<stem>.json`. `resolve_checkpoint` does both once per source
file, into the cache (keyed by the source's sha256), for `--model OFFICIAL.pt`
(`resolve_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocoder import __version__
from vocoder.checkpoint import CHECKPOINT_FORMAT, export_model
from vocoder.errors import ConfigError, InputError, first_line
from vocoder.features import MelConfig
from vocoder.files import TORCH_SUFFIXES, sha256_file
from vocoder.importers.l0sg import convert_l0sg, is_l0sg_checkpoint, reference_settings
from vocoder.importers.nvidia import HOP_LENGTH, convert_nvidia_waveglow, is_nvidia_waveglow
from vocoder.importers.safe_pickle import load_foreign_checkpoint
from vocoder.models import FlowVocoder, build_model
from vocoder.pretrained import cache_root

logger = logging.getLogger(__name__)

FOREIGN_SUFFIXES = (*TORCH_SUFFIXES, "")  # NVIDIA names some files without one
IMPORT_CACHE = "imported"


@dataclass
class ImportedModel:
    """A converted model (training form) with its mel convention and provenance."""

    model: FlowVocoder
    features: MelConfig
    metadata: dict[str, Any] = field(default_factory=dict)


def read_reference_config(path: str | Path) -> dict[str, Any]:
    """A reference codebase's JSON config file, as a mapping."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "a folder, not a JSON config file")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"not a readable JSON config ({e})") from None
    if not isinstance(document, dict):
        raise InputError(path, "expected a JSON object")
    return document


# the reference configs' `data_config` (both codebases take Tacotron 2's names) -> MelConfig
DATA_CONFIG_FIELDS = {
    "sampling_rate": "sample_rate",
    "filter_length": "n_fft",
    "win_length": "win_length",
    "hop_length": "hop_length",
    "mel_fmin": "fmin",
    "mel_fmax": "fmax",
}


def reference_features(
    document: dict[str, Any] | None, path: str | Path | None, n_mels: int
) -> MelConfig:
    """The mel convention of an imported model: tacotron2's, with what the reference
    config's `data_config` says (sample rate, STFT sizes, mel band edges), if it has one."""
    section = None if document is None else document.get("data_config")
    if section is None:
        return MelConfig.preset("tacotron2", n_mels=n_mels)
    if not isinstance(section, dict):
        raise InputError(path, "'data_config' is not a mapping")
    changes: dict[str, Any] = {"n_mels": n_mels}
    for key, name in DATA_CONFIG_FIELDS.items():
        if key not in section:  # the tacotron2 default
            continue
        value = section[key]  # mel_fmax null: up to the Nyquist frequency, as in librosa
        if (value is not None or key != "mel_fmax") and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise InputError(path, f"data_config.{key} is {value!r}, not a number")
        integer = name in ("sample_rate", "n_fft", "win_length", "hop_length")
        if integer and value != int(value):
            raise InputError(path, f"data_config.{key} is {value!r}, not a whole number")
        changes[name] = int(value) if integer else (None if value is None else float(value))
    if section.get("n_mel_channels", n_mels) != n_mels:
        raise InputError(
            path, f"data_config.n_mel_channels is {section['n_mel_channels']}, the weights {n_mels}"
        )
    if changes.get("hop_length", HOP_LENGTH) != HOP_LENGTH:  # both upsamplers' strides
        raise InputError(
            path,
            f"data_config.hop_length is {changes['hop_length']}; the reference models' "
            f"upsamplers have a hop of {HOP_LENGTH}",
        )
    try:
        return MelConfig.preset("tacotron2", **changes)
    except ConfigError as e:
        raise InputError(path, f"its data_config: {e}") from None


# what the reference code's constructor cannot do without: a config lacking one is of
# another project (a HiFi-GAN config.json, this toolkit's model JSON)
REQUIRED_SETTINGS = {
    "waveflow_config": ("n_height", "n_flow"),
    "waveglow_config": ("n_flows", "n_group"),
}


def _check_config_section(
    document: dict[str, Any] | None, path: str | Path | None, section: str, codebase: str
) -> None:
    """Refuse a reference config of the other codebase (a WaveGlow config for a NanoFlow),
    or of no reference codebase: its `section` (or the document, as that section alone)
    must give the settings the reference constructor takes (`REQUIRED_SETTINGS`)."""
    if document is None:
        return
    other = {"waveflow_config": "waveglow_config", "waveglow_config": "waveflow_config"}[section]
    if section not in document and other in document:
        raise InputError(path, f"a config with {other}, not {section}: not a config of {codebase}")
    settings = document.get(section, document)
    for key in REQUIRED_SETTINGS[section]:
        if not isinstance(settings, dict) or key not in settings:
            raise InputError(path, f"no {section}.{key}: not a config of {codebase}")


def check_height(n_height: int, name: str = "n_height") -> None:
    """Refuse a squeeze height no reference model can have: h must divide their hop."""
    if n_height < 1 or HOP_LENGTH % n_height:
        raise ConfigError(
            f"{name} must divide the reference models' hop of {HOP_LENGTH} "
            f"(1, 2, 4, ..., {HOP_LENGTH}), got {n_height}"
        )


def is_vocoder_checkpoint(data: Any) -> bool:
    return isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT


def import_checkpoint(
    source: str | Path,
    config: str | Path | None = None,
    n_height: int = 16,
    data: Any = None,
    sha256: str | None = None,
) -> ImportedModel:
    """Convert a published checkpoint; `config` is the reference's JSON config, if any.

    `n_height` is the squeeze height of an L0SG checkpoint when no config says it (no tensor
    records it). `data`, `sha256`: the file's contents (`load_foreign_checkpoint`) and digest,
    when the caller already has them.
    """
    check_height(n_height)
    source = Path(source)
    if source.is_dir():
        raise InputError(source, "a folder, not a checkpoint file")
    if not source.is_file():
        raise InputError(source, "no such file")
    if data is None:
        data = load_foreign_checkpoint(source)
    document = None if config is None else read_reference_config(config)
    if is_vocoder_checkpoint(data):
        raise InputError(source, "already a vocoder checkpoint; use it as it is (no import)")
    try:
        if is_l0sg_checkpoint(data):
            _check_config_section(document, config, "waveflow_config", "the NanoFlow reference")
            settings = None if document is None else reference_settings(document, config)
            model_config, state = convert_l0sg(data, source, settings, n_height, config)
            origin = "L0SG/NanoFlow"
        elif is_nvidia_waveglow(data):
            _check_config_section(document, config, "waveglow_config", "NVIDIA's WaveGlow")
            model_config, state = convert_nvidia_waveglow(data, source, document)
            origin = "NVIDIA/waveglow"
        else:
            raise InputError(
                source,
                "not a checkpoint format this toolkit imports (NanoFlow reference code, "
                "NVIDIA WaveGlow)",
            )
    except KeyError as e:
        raise InputError(source, f"incomplete checkpoint: no tensor {e.args[0]!r}") from None
    except (RuntimeError, ValueError, TypeError) as e:  # a malformed file's tensors or values
        raise InputError(source, f"cannot be converted ({first_line(e)})") from None
    features = reference_features(document, config, model_config.n_mels)
    model_config = dataclasses.replace(model_config, sample_rate=features.sample_rate)
    model = build_model(model_config)
    model.load_state_dict(state, strict=True)
    metadata = {
        "imported_from": origin,
        "source_file": source.name,
        "source_sha256": sha256 or sha256_file(source),
        "imported_by": f"vocoder {__version__}",
    }
    if document is not None:
        metadata["reference_config"] = document
    return ImportedModel(model.eval(), features, metadata)


def write_imported(
    imported: ImportedModel,
    out_stem: str | Path,
    overwrite: bool = False,
    inputs: tuple[str | Path | None, ...] = (),
) -> tuple[Path, Path]:
    """`<out_stem>.safetensors` + `<out_stem>.json`, loadable by `checkpoint.load_model`;
    `inputs` (the checkpoint and reference config read) are never written over."""
    metadata = {"name": Path(out_stem).name, **imported.metadata}  # a given name stays
    kept = [p for p in inputs if p is not None]
    return export_model(imported.model, imported.features, out_stem, metadata, overwrite, kept)


def resolve_checkpoint(
    path: str | Path, config: str | Path | None = None, cache_dir: str | Path | None = None
) -> Path:
    """`path` itself, or for a published checkpoint its cached import (made once).

    The import lives at `<cache>/imported/<sha256 of the file>.safetensors` (+ `.json`), so
    a file renamed or moved is not converted again. This toolkit's own files, run folders
    and anything not a `.pt`/`.pth`/`.ckpt` file come back unchanged.
    """
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in FOREIGN_SUFFIXES:
        return path
    digest = key = sha256_file(path)
    if config is not None:
        key += "-" + sha256_file(config)[:16]
    stem = cache_root(cache_dir) / IMPORT_CACHE / key
    weights, meta = stem.with_name(f"{key}.safetensors"), stem.with_name(f"{key}.json")
    if _intact(weights, meta):
        _warn_if_height_assumed(path, json.loads(meta.read_text(encoding="utf-8")))
        return weights
    data = load_foreign_checkpoint(path)
    if is_vocoder_checkpoint(data):
        return path
    imported = import_checkpoint(path, config, data=data, sha256=digest)
    imported.metadata["name"] = path.stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights, _ = write_imported(imported, stem, overwrite=True)  # replaces a damaged one
    origin = imported.metadata["imported_from"]
    logger.info(f"imported {path} ({origin} checkpoint) into {weights}")
    _warn_if_height_assumed(path, json.loads(meta.read_text(encoding="utf-8")))
    return weights


def _warn_if_height_assumed(path: Path, meta: dict) -> None:
    """Said on every use of the import, not only the first (which alone converts it)."""
    details = meta.get("metadata") or {}
    if details.get("imported_from") == "L0SG/NanoFlow" and "reference_config" not in details:
        n_group = (meta.get("model") or {}).get("n_group")
        logger.warning(
            f"{path}: h = {n_group} rows assumed, as in every published model (no tensor "
            "records h; for another h, convert it with vocoder import --config FILE)"
        )


def _intact(weights: Path, meta: Path) -> bool:
    """Whether a cached import is whole: its weights have the sha256 its JSON records."""
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))["weights_sha256"]
        return sha256_file(weights) == recorded
    except (OSError, ValueError, KeyError, TypeError):
        return False


__all__ = [
    "ImportedModel",
    "reference_features",
    "import_checkpoint",
    "write_imported",
    "resolve_checkpoint",
    "is_vocoder_checkpoint",
    "read_reference_config",
    "check_height",
]
