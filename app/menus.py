"""The demo's model menu: labels for the models given, or the registry's, and what each shows."""

from __future__ import annotations

import logging
from pathlib import Path

from vocoder import pretrained
from vocoder.errors import VocoderError

logger = logging.getLogger(__name__)


def path_menu(models: tuple[str, ...]) -> dict[str, str]:
    """Menu labels for models given by name or path: a file's stem, made unique."""
    menu: dict[str, str] = {}
    for source in models:
        path = Path(source)
        base = path.stem if path.suffix else path.name
        label, n = base, 1
        while label in menu:
            n += 1
            label = f"{base} ({n})"
        menu[label] = source
    return menu


def registry_menu() -> dict[str, str]:
    """The registry's models by name: the default one and the others on this machine first,
    then those downloaded on first use."""
    try:
        entries = pretrained.list_models()
    except VocoderError as e:  # no registry (a wheel install without VOCODER_REGISTRY)
        logger.warning("no pretrained models listed: %s", e)
        return {}
    local, remote = [], []
    for entry in entries:
        where = pretrained.model_location(entry)
        if where in ("shipped", "cached"):
            local.insert(0 if entry.default else len(local), entry.name)
        elif where == "remote":
            remote.append(entry.name)
    return {name: name for name in local + remote}


def describe_model(label: str, source: str) -> str:
    """What the menu shows for a model: its label, and for a registry model its size."""
    if label != source:
        return label
    try:
        entry = pretrained.get_model(source)
    except VocoderError:
        return label
    text = f"{label} ({entry.parameters / 1e6:.2f} M parameters)"
    if pretrained.model_location(entry) == "remote":
        text += ", downloaded on first use"
    return text
