"""Output folders of the commands: made and checked before the work, removed on failure.

A folder that cannot be created or written in fails the command up front, with one line
naming it, instead of after minutes of synthesis or evaluation; a folder the command made
is removed again when the command fails and leaves it empty. Commands that write a model
(`export`, `import`) share their `--out STEM` argument and its folder rule here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from vocoder.errors import InputError


@contextlib.contextmanager
def output_folders(folders: Iterable[Path]) -> Iterator[None]:
    """Create `folders` (with their parents) and check that each takes a file; if the body
    then fails, remove those made here that are still empty."""
    made: list[Path] = []
    try:
        for folder in dict.fromkeys(Path(f) for f in folders):
            _make(folder, made)
        yield
    except BaseException:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: what was written stays
        raise


def _make(folder: Path, made: list[Path]) -> None:
    missing = []
    existing = folder
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        problem = "is not a folder" if existing == folder else f"{existing} is not a folder"
        raise InputError(folder, f"cannot write here: {problem}")
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # made meanwhile (by another process of a torchrun job)
            continue
        except OSError as e:
            raise InputError(folder, f"cannot create this folder ({_reason(e)})") from None
        made.append(path)
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(folder, f"cannot write in this folder ({_reason(e)})") from None


def _reason(error: OSError) -> str:
    text = error.strerror or str(error)
    return text[0].lower() + text[1:] if text else type(error).__name__


def add_stem_argument(parser: argparse.ArgumentParser, source: str) -> None:
    """`--out STEM` of the commands that write a `.safetensors` + `.json` pair."""
    parser.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="STEM",
        help="output path without extension: writes STEM.safetensors and STEM.json (a "
        f"folder, or a path ending in /, gets {source}'s name: DIR/NAME.safetensors)",
    )


def output_stem(model: str, out: str) -> Path:
    """`out`, or inside the folder `out` (or `out` ending in a slash) the model's name."""
    if not (Path(out).is_dir() or out.endswith(("/", os.sep))):
        return Path(out)
    source = Path(model)
    name = source.stem if source.is_file() else source.name if source.is_dir() else model
    return Path(out) / name
