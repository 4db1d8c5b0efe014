"""Split helpers shared by the dataset layouts: id lists, seeded splits, validation slices."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from pathlib import Path, PurePosixPath
from typing import TypeVar

from vocoder.audio import AUDIO_EXTENSIONS
from vocoder.errors import InputError
from vocoder.files import TEXT_ENCODING

T = TypeVar("T")

SPLIT_NAMES: tuple[str, ...] = ("train", "valid", "test")


def read_id_list(path: str | Path, known: Collection[str] = ()) -> list[str]:
    """Ids, one per line (blank lines and `#` comments skipped; `id|...` keeps the id).

    An entry may be a path: an audio extension ends it (`take.01.wav` is `take.01`, and
    `take.01` stays so); where the entry is not in `known`, its last part is the id if that
    is (`DUMMY/LJ001-0001.wav` in Tacotron 2's lists), or that part's stem (a mel's path,
    `mels/LJ001-0001.npy`). An id of `known` with folders in it (`spk/LJ001-0001`) stays.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such id list")
    ids = []
    for line in path.read_text(encoding=TEXT_ENCODING).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = without_audio_extension(line.split("|", 1)[0].strip())
        name = PurePosixPath(entry.replace("\\", "/")).name
        candidates = (entry, name, PurePosixPath(name).stem)
        ids.append(next((c for c in candidates if c in known), entry))
    return ids


def without_audio_extension(entry: str) -> str:
    """`entry` less a trailing audio extension (`wavs/x.WAV` -> `wavs/x`; `take.01` stays)."""
    suffix = PurePosixPath(entry).suffix
    return entry[: -len(suffix)] if suffix.lower() in AUDIO_EXTENSIONS else entry


def default_valid_count(n_train: int) -> int:
    """Size of the validation slice carved from a train part: 5 %, at least 1, at most 100."""
    return 0 if n_train < 2 else max(1, min(100, round(0.05 * n_train)))


def carve_valid(
    train: Sequence[T], count: int | None = None, seed: int = 0
) -> tuple[list[T], list[T]]:
    """Split `train` into (train, valid): `count` items chosen by a seeded shuffle.

    Deterministic for a given list and seed; both parts keep the input order.
    """
    count = default_valid_count(len(train)) if count is None else count
    if not 0 <= count < max(len(train), 1):
        raise InputError("split", f"cannot take {count} validation items from {len(train)}")
    chosen = set(random.Random(seed).sample(range(len(train)), count))
    return (
        [x for i, x in enumerate(train) if i not in chosen],
        [x for i, x in enumerate(train) if i in chosen],
    )


def random_split(
    items: Sequence[T], valid_fraction: float, test_fraction: float, seed: int = 0
) -> dict[str, list[T]]:
    """Seeded split into train/valid/test by fractions (each non-empty part gets >= 1 item)."""
    check_fractions(valid_fraction, test_fraction)
    n = len(items)
    n_test = _part(n, test_fraction)
    n_valid = _part(n, valid_fraction)
    if n - n_test - n_valid < 1:
        raise InputError("split", f"{n} files are too few for a train/valid/test split")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    test, valid = set(order[:n_test]), set(order[n_test : n_test + n_valid])
    return {
        "train": [x for i, x in enumerate(items) if i not in test and i not in valid],
        "valid": [x for i, x in enumerate(items) if i in valid],
        "test": [x for i, x in enumerate(items) if i in test],
    }


def check_fractions(valid_fraction: float, test_fraction: float) -> None:
    """`InputError` unless both fractions lie in [0, 1) and leave something to train on."""
    for name, f in (("valid", valid_fraction), ("test", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise InputError("split", f"{name} fraction must be in [0, 1), got {f}")
    if valid_fraction + test_fraction >= 1.0:
        raise InputError("split", "valid and test fractions leave nothing to train on")


def _part(n: int, fraction: float) -> int:
    return 0 if fraction == 0.0 else max(1, round(fraction * n))
