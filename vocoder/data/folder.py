"""A plain folder of audio files (a custom voice), searched recursively.

Splits: "random", a shuffle seeded with `seed` by the given fractions; or "listed", the
`train.txt` / `test.txt` id lists (file stems, one per line) at the folder's top, with a
small validation slice carved from train (`carve_valid`). Files in neither list are left
out. Files are told apart by stem (a TTS model's mels, `data.mel_dir`, are `<stem>.npy`), so
two files with the same stem in different subfolders are an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vocoder.audio import AUDIO_EXTENSIONS
from vocoder.data.splits import carve_valid, random_split, read_id_list
from vocoder.errors import InputError

log = logging.getLogger(__name__)

FOLDER_SPLITS: tuple[str, ...] = ("random", "listed")


def scan_audio(root: str | Path, exclude: Path | None = None) -> list[Path]:
    """Audio files (.wav .flac .ogg, any case) under `root`, sorted; skips hidden files and
    anything under `exclude`."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such folder")
    exclude = exclude.resolve() if exclude is not None else None
    files = []
    for path in root.rglob("*"):
        if path.name.startswith(".") or path.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        if path.is_file():
            files.append(path)
    files.sort()
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise InputError(path, f"has the same name stem as {seen[path.stem]}; rename one")
        seen[path.stem] = path
    if not files:
        raise InputError(root, f"holds no audio files ({' '.join(AUDIO_EXTENSIONS)})")
    return files


def folder_splits(
    root: str | Path,
    split: str = "random",
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
    seed: int = 0,
    exclude: Path | None = None,
) -> dict[str, list[Path]]:
    """Audio paths of each part ("train", "valid", "test") of the folder's split."""
    root = Path(root)
    files = scan_audio(root, exclude=exclude)
    if split == "random":
        return random_split(files, valid_fraction, test_fraction, seed=seed)
    if split == "listed":
        by_stem = {p.stem: p for p in files}
        parts = {}
        for part in ("train", "test"):
            path = root / f"{part}.txt"
            ids = read_id_list(path, by_stem)
            missing = [i for i in ids if i not in by_stem]
            if missing:
                raise InputError(path, f"id {missing[0]}: no audio file of that name")
            parts[part] = [by_stem[i] for i in ids]
        overlap = {p.stem for p in parts["train"]} & {p.stem for p in parts["test"]}
        if overlap:
            raise InputError(root / "test.txt", f"id {sorted(overlap)[0]} is also in train.txt")
        unlisted = len(files) - len(parts["train"]) - len(parts["test"])
        if unlisted:
            log.info("%s: %d audio files are in neither train.txt nor test.txt", root, unlisted)
        train, valid = carve_valid(parts["train"], seed=seed)
        return {"train": train, "valid": valid, "test": parts["test"]}
    raise InputError(root, f"unknown folder split {split!r}; known: {', '.join(FOLDER_SPLITS)}")
