"""A plain folder of audio files (a custom voice), searched recursively.

Splits: "random", a shuffle seeded with `seed` by the given fractions; or "listed", the
`train.txt` / `test.txt` id lists (file stems, one per line) at the folder's top, with a
small validation slice carved from train (`carve_valid`). Files in neither list are left
out. Files are told apart by stem (a TTS model's mels, `data.mel_dir`, are `<stem>.npy`), so
two files with the same stem in different subfolders are an error.

The search follows linked folders (each folder once, so a link back up the tree ends) and
leaves out hidden files and folders. A folder it cannot read is an `InputError`, or is
gathered for the caller to report: its files are never left out unsaid (a disk's own
lost+found excepted, said in a note).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from vocoder.audio import AUDIO_EXTENSIONS
from vocoder.data.splits import carve_valid, random_split, read_id_list
from vocoder.errors import InputError

log = logging.getLogger(__name__)

FOLDER_SPLITS: tuple[str, ...] = ("random", "listed")
# what fsck keeps at the top of a file system, readable by root only: data on its own disk
# holds one, and it is never a folder of recordings
LOST_AND_FOUND = "lost+found"


def files_below(
    root: Path,
    suffixes: tuple[str, ...],
    exclude: Path | None = None,
    unreadable: list[InputError] | None = None,
) -> Iterator[Path]:
    """The files below `root` whose extension (any case) is one of `suffixes`, folder by
    folder in name order; links to folders outside the tree followed, each real folder
    walked once (one inside the tree where it is, not through a link to it); hidden
    files and folders, and anything whose real location is under `exclude` (resolved),
    left out. A folder that cannot be read is an `InputError`, appended to `unreadable`
    where one is given and raised otherwise."""

    def cannot_read(error: OSError) -> None:
        if Path(error.filename).name == LOST_AND_FOUND:  # a disk's own, root's alone
            log.info("%s: cannot read it; left out", error.filename)
            return
        reason = error.strerror or str(error)
        problem = InputError(error.filename, f"cannot read this folder ({reason.lower()})")
        if unreadable is None:
            raise problem
        unreadable.append(problem)

    # a link to a folder of the tree is not followed: the folder is walked where it is, so
    # its files keep their real paths (and a link back up the tree ends there)
    tree = Path(os.path.realpath(root))
    walked: set[str] = set()
    for folder, folders, names in os.walk(root, onerror=cannot_read, followlinks=True):
        real = os.path.realpath(folder)
        if real in walked or (exclude is not None and Path(real).is_relative_to(exclude)):
            folders[:] = []  # a second link to one folder outside the tree, or out
            continue
        walked.add(real)
        folders[:] = sorted(
            name
            for name in folders
            if not name.startswith(".")
            and not (
                os.path.islink(os.path.join(folder, name))
                and Path(os.path.realpath(os.path.join(folder, name))).is_relative_to(tree)
            )
        )
        for name in sorted(names):
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in suffixes:
                continue
            if exclude is not None and path.resolve().is_relative_to(exclude):
                continue
            yield path


def scan_audio(
    root: str | Path, exclude: Path | None = None, unreadable: list[InputError] | None = None
) -> list[Path]:
    """Audio files (.wav .flac .ogg .mp3, any case) under `root`, sorted, as `files_below`
    finds them (`exclude`, `unreadable` as there). A folder holding none is an
    `InputError` (the first unreadable folder's, where there is one)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such folder")
    exclude = exclude.resolve() if exclude is not None else None
    found = files_below(root, AUDIO_EXTENSIONS, exclude, unreadable)
    files = sorted(path for path in found if _is_file(path))
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise InputError(path, f"has the same name stem as {seen[path.stem]}; rename one")
        seen[path.stem] = path
    if not files:
        if unreadable:
            raise unreadable[0]
        raise InputError(root, f"holds no audio files ({' '.join(AUDIO_EXTENSIONS)})")
    return files


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # in a folder that cannot be searched: the reader says why it fails
        return True


def folder_splits(
    root: str | Path,
    split: str = "random",
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
    seed: int = 0,
    exclude: Path | None = None,
    unreadable: list[InputError] | None = None,
) -> dict[str, list[Path]]:
    """Audio paths of each part ("train", "valid", "test") of the folder's split.

    `unreadable`: gathers the folders that cannot be read (see `files_below`); a listed
    id that is not found is then the first such folder's error (it may hold the file)."""
    root = Path(root)
    files = scan_audio(root, exclude=exclude, unreadable=unreadable)
    if split == "random":
        return random_split(files, valid_fraction, test_fraction, seed=seed)
    if split == "listed":
        by_stem = {p.stem: p for p in files}
        parts = {}
        for part in ("train", "test"):
            path = root / f"{part}.txt"
            ids = read_id_list(path, by_stem)
            missing = [i for i in ids if i not in by_stem]
            if missing and unreadable:
                raise unreadable[0]
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
