"""What a `--model` value names: an exported model, a training checkpoint or run folder, a
published checkpoint of another codebase (imported once into the cache), or a pretrained
model of the registry."""

from __future__ import annotations

from pathlib import Path

from vocoder import pretrained
from vocoder.importers import resolve_checkpoint


def resolve_model_source(name_or_path: str | Path | None) -> Path:
    """The file (or training run folder) behind a `--model` value.

    An existing path is taken as is, except that a published checkpoint of another codebase
    (NanoFlow reference, NVIDIA WaveGlow) is imported once into the cache and that import
    returned; anything else is a pretrained model name (downloaded when the registry says
    where from); None is the registry's default model.
    """
    if name_or_path is None:
        name_or_path = pretrained.default_model_name()
    path = Path(name_or_path)
    if path.exists():
        return resolve_checkpoint(path)
    return pretrained.resolve_model_path(name_or_path)


__all__ = ["resolve_model_source"]
