"""Dataset preparation: scan, validate every file, write filelists and a manifest.

Output folder:

- `train.txt`, `valid.txt`, `test.txt`: filelists (`vocoder.data.filelist`) of the
  accepted audio;
- `wavs/<stem>.wav`: audio that had to be resampled or mixed down (16-bit PCM);
- `manifest.json`: the run's `MelConfig` (the mel convention the folder is prepared for),
  a hash of it, the options, counts and rejected files.

No mels are written: training cuts random segments and computes each utterance's mel
from its audio under the run's config (`vocoder.data.segments`), so a cache would only
be one more copy of the convention to go stale. `check_prepared` holds a run's config
against the manifest, so a folder prepared for another convention is refused by name.

A "random" split is drawn from the files that passed the checks, so rejected files cannot
leave the validation or test part empty.

Every file is checked before a run refuses any (a folder the scan cannot read, and a file
whose path a filelist cannot hold, are refused as a bad file is): without `skip_bad`, the
files that fail are raised together (`RefusedFiles`: each with its problem, counted by
kind, with the settings that fix each kind). Such a run leaves `out_dir` as it found it:
the folder is claimed at its first write, writing stops at the first refused file, files
that were there are replaced only once every file passed, and what the run added is taken
back.

Nothing is overwritten without `force`: a folder holding a manifest is refused (with the
differing mel settings named when the config changed). A run that stops early after it has
begun writing (a kill, a full disk) leaves a `.prepare-incomplete.json` marker; a rerun
with the same mel config resumes over it, one with another config needs `force`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vocoder.audio import AUDIO_EXTENSIONS, save_audio
from vocoder.config import differences, to_dict
from vocoder.data.audio_checks import BadAudio, RefusedFiles, Rejected, check_audio
from vocoder.data.filelist import write_filelist
from vocoder.data.folder import files_below, folder_splits, scan_audio
from vocoder.data.ljspeech import audio_path, is_ljspeech, ljspeech_splits, read_metadata
from vocoder.data.splits import SPLIT_NAMES, check_fractions, random_split
from vocoder.errors import InputError, remedy, with_remedies
from vocoder.features import MelConfig
from vocoder.files import atomic_output

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
INCOMPLETE = ".prepare-incomplete.json"
STAGED = ".{stem}.prepare-staged{suffix}"  # audio replacing an earlier run's until the end

ProgressCallback = Callable[[int, int, Path], None]
"""Called after each file with (files done, files in all, the file)."""


@dataclass
class PrepareSummary:
    """What `prepare_dataset` did."""

    out_dir: Path
    layout: str
    split: str
    counts: dict[str, int] = field(default_factory=dict)
    hours: dict[str, float] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    rewritten: int = 0  # files resampled or mixed down into out_dir/wavs
    accepted: int = 0  # distinct files accepted (a file in two parts counts once)
    total_hours: float = 0.0  # of the distinct accepted files


def mel_config_hash(mel_config: MelConfig) -> str:
    """A short stable hash of a mel config (the convention a prepared folder is for)."""
    text = json.dumps(to_dict(mel_config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def detect_layout(data_dir: str | Path) -> str:
    """ "ljspeech" when the folder has a metadata.csv, else "folder"."""
    return "ljspeech" if is_ljspeech(data_dir) else "folder"


def default_split(data_dir: str | Path, layout: str) -> str:
    """ "listed" when train.txt and test.txt lie at the top; else "nanoflow" / "random"."""
    data_dir = Path(data_dir)
    if (data_dir / "train.txt").is_file() and (data_dir / "test.txt").is_file():
        return "listed"
    return "nanoflow" if layout == "ljspeech" else "random"


def prepare_dataset(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    layout: str | None = None,
    split: str | None = None,
    splits_dir: str | Path | None = None,
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
    seed: int = 0,
    mel_config: MelConfig | None = None,
    segment_length: int = 16000,
    resample: bool = False,
    mixdown: bool = False,
    skip_bad: bool = False,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> PrepareSummary:
    """Validate a dataset and write its filelists and manifest into `out_dir`.

    `mel_config` is the convention of the runs that will train on the folder (audio is
    checked and resampled at its sample rate; the manifest records all of it).

    `layout` "ljspeech" or "folder" (detected when None); `split` as in
    `vocoder.data.ljspeech` / `vocoder.data.folder` (default: "listed" when train.txt and
    test.txt exist, else "nanoflow" for LJ Speech and "random" for a folder). Bad files
    raise `RefusedFiles` (every one, with its problem), unless `skip_bad`, which lists
    them in the summary instead.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    mel_config = mel_config or MelConfig()
    mel_config.validate()
    if not data_dir.is_dir():
        raise InputError(data_dir, "no such folder")
    if segment_length <= 0:
        raise InputError("segment_length", f"must be positive, got {segment_length}")
    if out_dir.resolve() == data_dir.resolve():
        raise InputError(out_dir, "the output folder must differ from the data folder")
    layout = layout or detect_layout(data_dir)
    split = split or default_split(data_dir, layout)
    if layout not in ("ljspeech", "folder"):
        raise InputError(data_dir, f"unknown layout {layout!r}; known: ljspeech, folder")
    unreadable: list[InputError] = []  # folders the scan could not read: refused as files are
    if split == "random":
        # Drawn after the checks, from the files that pass them: rejected files cannot
        # empty the held-out parts.
        check_fractions(valid_fraction, test_fraction)
        if layout == "ljspeech":
            candidates = [audio_path(data_dir, i) for i in read_metadata(data_dir)]
        else:
            candidates = scan_audio(data_dir, exclude=out_dir, unreadable=unreadable)
        parts = {"train": candidates}
    elif layout == "ljspeech":
        parts = ljspeech_splits(data_dir, split, splits_dir, seed, valid_fraction, test_fraction)
    else:
        parts = folder_splits(
            data_dir, split, valid_fraction, test_fraction, seed, out_dir, unreadable
        )

    config_hash = mel_config_hash(mel_config)
    fingerprint = source_fingerprint(data_dir, exclude=out_dir)  # before reading: as read
    _check_out_dir(out_dir, mel_config, config_hash, force)
    output = _Output(out_dir, config_hash)

    files = list(dict.fromkeys(p for part in SPLIT_NAMES for p in parts.get(part, [])))
    summary = PrepareSummary(out_dir=out_dir, layout=layout, split=split)
    accepted: dict[Path, tuple[Path, float]] = {}  # source -> (path to train on, seconds)
    digests: dict[Path, str] = {}  # source -> digest of its samples: copies under two names
    refused: list[Rejected] = []  # without skip_bad: the run writes no more once one is
    for folder in unreadable:
        rejected = Rejected(Path(folder.source), folder.problem, folder.remedies)
        (summary.rejected if skip_bad else refused).append(rejected)
    for done, path in enumerate(files, start=1):
        try:
            _check_listable(path)
            audio, changed = check_audio(
                path, mel_config.sample_rate, segment_length, resample, mixdown, keep=not refused
            )
        except InputError as e:
            kinds = e.kinds if isinstance(e, BadAudio) else ("unreadable",)
            rejected = Rejected(path, e.problem, e.remedies, kinds)
            (summary.rejected if skip_bad else refused).append(rejected)
            log.debug("rejected %s: %s", path, e.problem)
        else:
            if audio is not None:  # None once a file was refused: nothing more is saved
                target = path
                if changed:
                    target = out_dir / "wavs" / f"{path.stem}.wav"
                    output.save_audio(target, audio, mel_config.sample_rate)
                    summary.rewritten += 1
                accepted[path] = (target, audio.numel() / mel_config.sample_rate)
                digests[path] = hashlib.sha256(audio.contiguous().numpy().tobytes()).hexdigest()
        if progress is not None:
            progress(done, len(files), path)

    if refused:
        output.take_back()
        raise RefusedFiles(data_dir, refused)
    if not accepted:  # each file's reason, not the count alone
        raise RefusedFiles(data_dir, summary.rejected, left_out=True)
    if split == "random":
        parts = random_split(list(accepted), valid_fraction, test_fraction, seed=seed)
    try:
        _check_no_test_copies(parts, digests)
    except InputError:
        output.take_back()
        raise
    output.commit()
    for part in SPLIT_NAMES:
        kept = [p for p in parts.get(part, []) if p in accepted]
        write_filelist(out_dir / f"{part}.txt", [accepted[p][0] for p in kept], overwrite=True)
        summary.counts[part] = len(kept)
        summary.hours[part] = sum(accepted[p][1] for p in kept) / 3600
    summary.accepted = len(accepted)
    summary.total_hours = sum(seconds for _, seconds in accepted.values()) / 3600

    manifest = {
        "mel_config": to_dict(mel_config),
        "mel_config_hash": config_hash,
        "source": str(data_dir.resolve()),
        "source_fingerprint": fingerprint,
        "layout": layout,
        "split": split,
        "seed": seed,
        "segment_length": segment_length,
        "counts": summary.counts,
        "hours": {k: round(v, 4) for k, v in summary.hours.items()},
        "rejected": [
            {"path": str(r.path), "reason": with_remedies(r.reason, r.remedies)}
            for r in summary.rejected
        ],
    }
    _write_json(out_dir / MANIFEST, manifest)
    (out_dir / INCOMPLETE).unlink(missing_ok=True)
    return summary


# what a dataset folder is made of, as far as preparing it goes: its audio and its lists
_SOURCE_SUFFIXES = (*AUDIO_EXTENSIONS, ".txt", ".csv")


def source_fingerprint(data_dir: str | Path, exclude: str | Path | None = None) -> str:
    """A digest of the audio files and lists (.txt, .csv) under `data_dir`, by path, size
    and modification time, found as the folder scan finds them (`files_below`: linked
    folders followed, hidden files and folders and `exclude` left out; a folder or file
    that cannot be read counts as such): the manifest records it, so that a recipe can tell
    a prepared folder whose recordings or split lists have changed since."""
    root = Path(data_dir).resolve()
    skip = Path(exclude).resolve() if exclude is not None else None
    unreadable: list[InputError] = []
    digest = hashlib.sha256()
    for path in files_below(root, _SOURCE_SUFFIXES, skip, unreadable):
        try:
            stat = path.stat()
            state = f"{stat.st_size}\0{stat.st_mtime_ns}"
        except OSError:  # a broken link, or a file in a folder that cannot be searched
            state = "unreadable"
        digest.update(os.fsencode(path.relative_to(root).as_posix()) + f"\0{state}\n".encode())
    for folder in unreadable:
        relative = os.fsencode(Path(folder.source).relative_to(root).as_posix())
        digest.update(relative + b"/\0unreadable\n")
    return digest.hexdigest()


def _check_listable(path: Path) -> None:
    """`BadAudio` for a path that a filelist, UTF-8 text, cannot hold."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        problem = "path is not valid UTF-8, which a filelist cannot hold; rename the file or folder"
        raise BadAudio(path, problem, ["name"]) from None


def _check_no_test_copies(parts: dict[str, list[Path]], digests: dict[Path, str]) -> None:
    """`InputError` for a test file whose samples a train or valid file holds too (a copy
    under another name: checked by name alone, it would be trained and tested on)."""
    kept = [p for part in ("train", "valid") for p in parts.get(part, []) if p in digests]
    trained = {digests[p]: p for p in kept}
    copies = [(p, trained[digests[p]]) for p in parts.get("test", []) if digests.get(p) in trained]
    if copies:
        (test, train), more = copies[0], len(copies) - 1
        also = f" (and {more} more test file(s) are copies)" if more else ""
        raise InputError(
            test,
            f"a test file holds the same audio as {train}, which would be trained on{also}; "
            "remove the copy",
        )


def read_manifest(out_dir: str | Path) -> dict:
    """The manifest of a prepared folder."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError(path, "no such file; run 'vocoder prepare' first")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(path, f"not a readable manifest ({e})") from None


def check_prepared(
    prepared_dir: str | Path, mel_config: MelConfig, segment_length: int | None = None
) -> None:
    """Refuse a prepared folder whose manifest states another mel convention than `mel_config`.

    A `segment_length` longer than the one the clips were checked against is warned about
    (shorter clips are zero-padded). A folder without a manifest (filelists written by
    hand) is not checked.
    """
    if not Path(prepared_dir).is_dir():
        problem = (
            "is a file, not a data folder" if Path(prepared_dir).is_file() else "no such folder"
        )
        raise InputError(prepared_dir, f"{problem}; vocoder prepare makes one")
    path = Path(prepared_dir) / MANIFEST
    if not path.is_file():
        if not (Path(prepared_dir) / "train.txt").is_file():
            raise InputError(
                prepared_dir, f"holds no train.txt or {MANIFEST}: not a folder vocoder prepare made"
            )
        log.info("%s: no manifest; the mel convention is not checked", prepared_dir)
        return
    stated = read_manifest(prepared_dir).get("mel_config")
    if not isinstance(stated, dict):
        raise InputError(path, "states no mel_config; prepare the folder again")
    wanted = to_dict(mel_config)
    # keys the manifest has and the run's MelConfig lacks (written by another version) are
    # not the run's convention: only the run's keys are compared
    changed = differences({k: stated.get(k) for k in wanted}, wanted)
    if changed:
        settings = ", ".join(changed)
        raise InputError(
            path,
            f"prepared for another mel convention than the run's features ({settings}); "
            "prepare the data again with the run's config",
        )
    checked = read_manifest(prepared_dir).get("segment_length")
    if segment_length is not None and isinstance(checked, int) and segment_length > checked:
        log.warning(
            "%s: the clips were checked to hold %d samples, but data.segment_length is %d: "
            "clips shorter than a segment are zero-padded; prepare again with this config "
            "to leave them out",
            path,
            checked,
            segment_length,
        )


def _check_out_dir(out_dir: Path, mel_config: MelConfig, config_hash: str, force: bool) -> None:
    """Refuse to touch earlier results unless `force` (writes nothing: `_Output` claims
    the folder at its first write)."""
    manifest, marker = out_dir / MANIFEST, out_dir / INCOMPLETE
    if not force:
        if marker.is_file():  # first: a killed forced run leaves the manifest it replaces
            if _read_json(marker).get("mel_config_hash") != config_hash:
                raise InputError(
                    out_dir,
                    "holds an unfinished preparation with a different mel config",
                    [remedy("to start over", force=True)],
                )
            return  # the same convention: resume over it
        if manifest.is_file():
            old = _read_json(manifest)
            if old.get("mel_config_hash") != config_hash:
                changed = _changed_fields(old.get("mel_config") or {}, to_dict(mel_config))
                raise InputError(
                    out_dir,
                    f"was prepared with a different mel config ({changed})",
                    [remedy("to redo it with the new one", force=True)],
                )
            raise InputError(
                out_dir,
                "is already prepared (manifest.json)",
                [remedy("to redo it", force=True)],
            )
        ours = [out_dir / f"{p}.txt" for p in SPLIT_NAMES]
        existing = [p.name for p in ours if p.exists()]
        if existing:
            raise InputError(
                out_dir,
                f"already holds {', '.join(existing)} from another run",
                [remedy("to overwrite", force=True)],
            )


class _Output:
    """One run's writes into `out_dir`, which the run owns only once it succeeds.

    The folder is claimed (made, marked unfinished) at the first write. New files are
    written in place; a file that is there already (a resumed run's audio, or with `force`
    an earlier run's) is written beside it (`STAGED`) and moved onto it by `commit`, which
    also removes an earlier manifest. Till then the folder holds what it held, and what its
    manifest states, plus unlisted files: `take_back`, for a run that refuses files,
    removes those (and a marker the run wrote, or puts back the one it replaced), leaving
    the folder as it was.
    """

    def __init__(self, out_dir: Path, config_hash: str):
        self.out_dir, self.config_hash = out_dir, config_hash
        self.added: list[Path] = []  # files and folders this run made, in order
        self.staged: dict[Path, Path] = {}  # file written beside -> the file it replaces
        self.claimed = False
        self.earlier_marker: bytes | None = None  # another run's, put back by take_back

    def claim(self) -> None:
        if self.claimed:
            return
        missing = [p for p in (self.out_dir, *self.out_dir.parents) if not p.exists()]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.added += reversed(missing)
        marker = self.out_dir / INCOMPLETE
        if marker.exists():
            self.earlier_marker = marker.read_bytes()
        else:
            self.added.append(marker)
        _write_json(marker, {"mel_config_hash": self.config_hash})
        self.claimed = True

    def save_audio(self, path: Path, audio: torch.Tensor, sample_rate: int) -> None:
        self.claim()
        target = path
        if path.exists():
            target = path.with_name(STAGED.format(stem=path.stem, suffix=path.suffix))
            self.staged[target] = path
        self.added += [p for p in (path.parent, target) if not p.exists()]
        save_audio(target, audio, sample_rate, overwrite=True)

    def commit(self) -> None:
        """Claim the folder (a run that wrote no audio has not) and put the staged files in
        place; the filelists and manifest are the caller's to write next."""
        self.claim()
        (self.out_dir / MANIFEST).unlink(missing_ok=True)  # it describes another run now
        for staged, path in self.staged.items():
            os.replace(staged, path)
        for leftover in (self.out_dir / "wavs").glob(STAGED.format(stem="*", suffix="*")):
            leftover.unlink(missing_ok=True)  # written by a run that was killed

    def take_back(self) -> None:
        if self.earlier_marker is not None:
            (self.out_dir / INCOMPLETE).write_bytes(self.earlier_marker)
        for path in reversed(self.added):
            with contextlib.suppress(OSError):  # a folder goes only when empty
                path.rmdir() if path.is_dir() else path.unlink()


def _changed_fields(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not keys:
        return "hash differs"
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        redo = remedy("to redo", force=True)
        raise InputError(path, f"not readable JSON ({e})", [redo]) from None
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in JSON")
