"""Filelists: text files naming one audio file per line.

Relative paths are resolved against the filelist's own folder, so a prepared data folder
can be moved as a whole. Blank lines and lines starting with `#` are ignored. Paths are
made absolute but symlinks are kept as named (a file's stem names its mel in a
`data.mel_dir`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from vocoder.errors import InputError
from vocoder.files import TEXT_ENCODING, atomic_output


def read_filelist(path: str | Path, check_exists: bool = True) -> list[Path]:
    """The audio paths a filelist names, made absolute; `InputError` for a missing list or entry."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder, not a filelist (one audio file per line)")
    if not path.is_file():
        raise InputError(path, "no such filelist")
    try:
        lines = path.read_text(encoding=TEXT_ENCODING).splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"not a readable text file ({e})") from None
    base = Path(os.path.abspath(path.parent))
    paths = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        # Tacotron-style lists carry "path|text"; only the path matters here.
        entry = entry.split("|", 1)[0].strip()
        resolved = Path(entry) if os.path.isabs(entry) else base / entry
        if check_exists and not resolved.is_file():
            raise InputError(path, f"line {number}: {entry}: no such file")
        paths.append(resolved)
    return paths


def write_filelist(path: str | Path, paths: Iterable[str | Path], overwrite: bool = False) -> Path:
    """Write one path per line, atomically; paths inside the list's folder are made relative.

    Paths outside that folder are written absolute (symlinks kept), so the list stays valid
    when the folder that holds it is moved on its own. "Inside" also counts a file reached
    through a symlinked folder: its folder's real location is inside the list's.
    """
    path = Path(path)
    base = Path(os.path.abspath(path.parent))
    real_base = Path(os.path.realpath(base))
    lines = [_entry(Path(os.path.abspath(p)), base, real_base) for p in paths]
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _entry(path: Path, base: Path, real_base: Path) -> str:
    """An absolute `path` as a filelist line: relative when inside `base`, else as it is."""
    if path.is_relative_to(base):
        return path.relative_to(base).as_posix()
    real = Path(os.path.realpath(path.parent)) / path.name  # the file's own name kept
    if real.is_relative_to(real_base):
        return real.relative_to(real_base).as_posix()
    return str(path)
