"""The LJ Speech 1.1 layout (`metadata.csv` + `wavs/`) and its published splits.

Splits (`ljspeech_splits(root, split)`), each a dict "train"/"valid"/"test" -> audio paths:

- "nanoflow": the NanoFlow reference code's: the first 10 % of the metadata order (the
  first 1,310 of 13,100 ids) is the test set, the rest train.
- "espnet": ParallelWaveGAN / ESPnet recipes': the last 500 ids, 250 valid then 250 test.
- "tacotron2": NVIDIA/tacotron2's (also WaveGlow's) id lists `tacotron2_{train,val,test}.txt`.
- "hifigan": HiFi-GAN's `hifigan_{training,validation}.txt`. HiFi-GAN has no test set and
  reports on its validation list, so that list is both "valid" and "test".
- "listed": `train.txt` / `test.txt` id lists next to `metadata.csv` (as ljspeech-mini has).
- "random": a seeded shuffle by fractions (`vocoder.data.splits.random_split`).

The id-list splits take the folder holding the lists (`splits_dir`, one id per line);
ids absent from this copy's metadata.csv are dropped (logged), so a subset of the corpus
keeps each file's published role. Where a split has no validation part ("nanoflow",
"listed", or an id-list split whose valid ids are all absent), a small one is carved from
train deterministically (`carve_valid`: 5 %, at least 1, at most 100 files, chosen by a
shuffle seeded with `seed`).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from vocoder.audio import AUDIO_EXTENSIONS
from vocoder.data.splits import (
    carve_valid,
    random_split,
    read_id_list,
    without_audio_extension,
)
from vocoder.errors import InputError, remedy
from vocoder.files import TEXT_ENCODING

log = logging.getLogger(__name__)

LJSPEECH_SPLITS: tuple[str, ...] = (
    "nanoflow",
    "espnet",
    "tacotron2",
    "hifigan",
    "listed",
    "random",
)
NANOFLOW_TEST_FRACTION = 0.1
ESPNET_HELD_OUT = 500

_ID_LISTS = {
    "tacotron2": {
        "train": "tacotron2_train.txt",
        "valid": "tacotron2_val.txt",
        "test": "tacotron2_test.txt",
    },
    "hifigan": {
        "train": "hifigan_training.txt",
        "valid": "hifigan_validation.txt",
        "test": "hifigan_validation.txt",
    },
}


def is_ljspeech(root: str | Path) -> bool:
    """Whether `root` looks like the LJ Speech layout (has a metadata.csv)."""
    return (Path(root) / "metadata.csv").is_file()


def read_metadata(root: str | Path) -> list[str]:
    """Utterance ids in metadata.csv order (rows `id|text|normalized text`)."""
    path = Path(root) / "metadata.csv"
    if not path.is_file():
        raise InputError(path, "no such file; an LJ Speech folder holds metadata.csv and wavs/")
    ids = []
    with open(path, encoding=TEXT_ENCODING, newline="") as f:
        # QUOTE_NONE: LJ Speech texts contain unbalanced quotes.
        for number, row in enumerate(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE), 1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2:
                raise InputError(path, f"line {number}: expected 'id|text|normalized text'")
            ids.append(_utterance_id(row[0].strip()))
    if not ids:
        raise InputError(path, "lists no utterances")
    if len(set(ids)) != len(ids):
        raise InputError(path, "lists some ids more than once")
    return ids


def _utterance_id(entry: str) -> str:
    """An id as metadata.csv may write it: `LJ001-0001`, or the clip's path below the
    folder (`wavs/LJ001-0001.wav`), whose folder and extension `audio_path` adds back."""
    return without_audio_extension(entry).removeprefix("wavs/")


def audio_path(root: str | Path, utterance_id: str) -> Path:
    """`wavs/<id>.wav` (or the .flac / .ogg of that id when that is what exists), else the
    file of that id beside metadata.csv (a corpus kept flat)."""
    wavs = Path(root) / "wavs"
    for folder in (wavs, Path(root)):
        for ext in AUDIO_EXTENSIONS:
            candidate = folder / f"{utterance_id}{ext}"
            if candidate.is_file():
                return candidate
    return wavs / f"{utterance_id}.wav"


def ljspeech_split_ids(
    root: str | Path,
    split: str = "nanoflow",
    splits_dir: str | Path | None = None,
    seed: int = 0,
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
) -> dict[str, list[str]]:
    """Ids of each part ("train", "valid", "test") of `split`; see the module docstring."""
    root = Path(root)
    ids = read_metadata(root)
    if split == "nanoflow":
        n_test = round(NANOFLOW_TEST_FRACTION * len(ids))
        train, valid = carve_valid(ids[n_test:], seed=seed)
        return {"train": train, "valid": valid, "test": ids[:n_test]}
    if split == "espnet":
        if len(ids) <= 2 * ESPNET_HELD_OUT:
            raise InputError(
                root / "metadata.csv",
                f"the espnet split holds out the last {ESPNET_HELD_OUT} of the full corpus; "
                f"this copy has only {len(ids)} ids",
            )
        half = ESPNET_HELD_OUT // 2
        return {
            "train": ids[:-ESPNET_HELD_OUT],
            "valid": ids[-ESPNET_HELD_OUT:-half],
            "test": ids[-half:],
        }
    if split in _ID_LISTS:
        if splits_dir is None:
            raise InputError(
                root, f"the {split} split needs its id lists", [remedy(splits_dir="DIR")]
            )
        known = set(ids)
        parts = {}
        for part, name in _ID_LISTS[split].items():
            listed = read_id_list(Path(splits_dir) / name, known)
            parts[part] = [i for i in listed if i in known]
            if len(parts[part]) < len(listed):
                log.info(
                    "%s: %d of %d ids are not in this copy of the corpus; dropped",
                    name,
                    len(listed) - len(parts[part]),
                    len(listed),
                )
        if not parts["valid"]:  # a subset of the corpus may hold none of the valid ids
            parts["train"], parts["valid"] = carve_valid(parts["train"], seed=seed)
        return parts
    if split == "listed":
        known = set(ids)
        parts = {}
        for part in ("train", "test"):
            path = root / f"{part}.txt"
            listed = read_id_list(path, known)
            missing = [i for i in listed if i not in known]
            if missing:
                raise InputError(path, f"id {missing[0]} is not in metadata.csv")
            parts[part] = listed
        overlap = set(parts["train"]) & set(parts["test"])
        if overlap:
            raise InputError(root / "test.txt", f"id {sorted(overlap)[0]} is also in train.txt")
        train, valid = carve_valid(parts["train"], seed=seed)
        return {"train": train, "valid": valid, "test": parts["test"]}
    if split == "random":
        return random_split(ids, valid_fraction, test_fraction, seed=seed)
    raise InputError(
        root, f"unknown LJ Speech split {split!r}; known: {', '.join(LJSPEECH_SPLITS)}"
    )


def ljspeech_splits(
    root: str | Path,
    split: str = "nanoflow",
    splits_dir: str | Path | None = None,
    seed: int = 0,
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
) -> dict[str, list[Path]]:
    """Audio paths of each part ("train", "valid", "test") of `split`."""
    parts = ljspeech_split_ids(root, split, splits_dir, seed, valid_fraction, test_fraction)
    return {part: [audio_path(root, i) for i in ids] for part, ids in parts.items()}
