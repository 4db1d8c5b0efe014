"""The checks a dataset's audio passes before training takes it, and how a refusal is said.

`check_audio` loads one file and refuses it (`BadAudio`, or the reader's own `InputError`)
when it cannot be read, is silent, clipped, beyond full scale (a float file) or shorter
than a training segment, or has more channels or another sample rate than the run's
(unless mixing down or resampling is on: a file is checked in full first, so that it is
refused for what those settings cannot fix).
`RefusedFiles` gathers every refused file of a dataset, counted by kind, with the settings
that fix each kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vocoder.audio import audio_info, load_audio, open_audio, resample
from vocoder.errors import InputError, Remedy, remedy, with_remedies

SILENCE_DBFS = -60.0
CLIP_LEVEL = 0.999
CLIP_FRACTION = 0.01
# the kinds of problem `check_audio` finds, as a count of files words them ("2 too short")
KINDS: dict[str, str] = {
    "unreadable": "unreadable",  # whatever `vocoder.audio` refuses: not audio, empty, NaN
    "channels": "multi-channel",
    "sample_rate": "at another sample rate",
    "silent": "silent",
    "clipped": "clipped",
    "over": "beyond full scale",
    "short": "too short",
    "name": "with a path that is not UTF-8",
}
# what each setting a file's remedy names fixes, for a count of files by kind
FIXES: dict[str, str] = {
    "resample": "to convert the sample rates",
    "mixdown": "to average the channels",
}
SHOWN = 20  # refused files a message lists; the rest are counted


@dataclass(frozen=True)
class Rejected:
    """A file left out, why, and the options that would have let it in.

    `kinds`: its problems as `KINDS` keys (two where a file has more channels and another
    rate than the run's, both fixed by settings; one otherwise).
    """

    path: Path
    reason: str
    remedies: tuple[Remedy, ...] = ()
    kinds: tuple[str, ...] = ("unreadable",)


class BadAudio(InputError):
    """`check_audio`'s refusal of a file: an `InputError` with the kinds of its problems."""

    def __init__(
        self,
        source: str | Path,
        problem: str,
        kinds: Sequence[str],
        remedies: Sequence[Remedy] = (),
    ):
        super().__init__(source, problem, remedies)
        self.kinds = tuple(kinds)


class RefusedFiles(InputError):
    """The files of a dataset that failed the checks (without `skip_bad`): all of them.

    `source`: the data folder; `problem`: the count by kind ("3 file(s) refused (1
    unreadable, 2 too short)"); `refused`: each file with its problem and remedies;
    `remedies`: the settings that fix a kind of them each (`resample`, `mixdown`), then
    `skip_bad`, which leaves out the rest (`unfixable` files), or all of them where every
    file has a fix. The message lists the first `SHOWN` files, a line each.
    """

    def __init__(self, source: str | Path, refused: list[Rejected], left_out: bool = False):
        """`left_out`: `skip_bad` left out every file, so none is left to train on (the
        remedies are then the fixes alone)."""
        self.refused = tuple(refused)
        self.left_out = left_out
        counts: dict[str, int] = {}
        for r in self.refused:
            for kind in r.kinds:
                counts[kind] = counts.get(kind, 0) + 1
        kinds = ", ".join(f"{counts[k]} {label}" for k, label in KINDS.items() if k in counts)
        names = [name for r in self.refused for s in r.remedies for name, _ in s.settings]
        fixes = [remedy(FIXES[name], **{name: True}) for name in FIXES if name in names]
        self.unfixable = sum(1 for r in self.refused if not r.remedies)
        rest = "to leave out the rest" if self.unfixable and fixes else "to leave them out"
        if left_out:
            problem = f"no usable audio: all {len(self.refused)} file(s) were left out ({kinds})"
        else:
            problem = f"{len(self.refused)} file(s) refused ({kinds})"
        super().__init__(
            source, problem, fixes if left_out else [*fixes, remedy(rest, skip_bad=True)]
        )
        settings = [
            f"{name}={value} {s.purpose}" for s in self.remedies for name, value in s.settings
        ]
        if left_out:
            fixing = " and ".join(settings)
            lines = [f"{self.source}: {self.problem}" + (f"; set {fixing}" if fixing else "")]
        else:
            lines = [f"{self.source}: {self.problem}; set {advice(settings, self.unfixable)}"]
        lines += [
            f"  {r.path}: {with_remedies(r.reason, r.remedies)}" for r in self.refused[:SHOWN]
        ]
        if len(self.refused) > SHOWN:
            lines.append(f"  and {len(self.refused) - SHOWN} more refused file(s)")
        self.args = ("\n".join(lines),)


def advice(remedies: list[str], unfixable: int) -> str:
    """The worded remedies of `RefusedFiles` (skip_bad's last) as one phrase: "A, B and C",
    or "A and B, or C" where the fixes let every file in (C then leaves them all out)."""
    *fixes, skip = remedies
    if not fixes:
        return skip
    if unfixable:
        fixes.append(skip)
    words = f"{', '.join(fixes[:-1])} and {fixes[-1]}" if len(fixes) > 1 else fixes[0]
    return words if unfixable else f"{words}, or {skip}"


def _loudest_channel_peak(path: Path) -> float:
    """The largest sample of any channel of `path` (0 where libsndfile cannot say)."""
    try:
        with open_audio(path) as f:
            return float(np.abs(f.read(dtype="float32")).max())
    except (InputError, ValueError):  # unreadable, or no samples
        return 0.0


def check_audio(
    path: Path,
    sample_rate: int,
    segment_length: int,
    resample_audio: bool = False,
    mixdown: bool = False,
    keep: bool = True,
) -> tuple[torch.Tensor | None, bool]:
    """Load and validate one file: (audio at `sample_rate`, whether it was changed).

    `keep` False: only check (the audio is None), and count a file at another rate in the
    samples it would have rather than resample it (a run that refused a file saves no more).

    Raises `InputError(path, reason)` for an unreadable or empty file (from
    `vocoder.audio`), and `BadAudio` for a silent, clipped, beyond full scale or too short
    one, or one with several channels (unless `mixdown`) or at another rate (unless
    `resample_audio`). A file is decoded and checked in full before it is refused for its
    channels or rate, so that a file the settings would not save is refused for what they
    cannot fix.
    """
    info = audio_info(path)
    kinds, problems, remedies = [], [], []
    if info.channels > 1 and not mixdown:
        kinds.append("channels")
        problems.append(f"has {info.channels} channels")
        remedies.append(remedy("to average them", mixdown=True))
    if info.sample_rate != sample_rate and not resample_audio:
        kinds.append("sample_rate")
        problems.append(f"sample rate {info.sample_rate} Hz, expected {sample_rate} Hz")
        remedies.append(remedy("to convert it", resample=True))
    audio = load_audio(path, mixdown=True)
    peak = float(audio.abs().max())
    if peak < 10 ** (SILENCE_DBFS / 20):
        level = 20 * math.log10(peak) if peak > 0 else -math.inf
        problem = f"silent: peak {level:.1f} dBFS is below {SILENCE_DBFS:g} dBFS"
        if info.channels > 1 and _loudest_channel_peak(path) >= max(
            10 ** (SILENCE_DBFS / 20), 10 * peak
        ):  # a channel holds sound 20 dB above their average: one is the other inverted
            problem = (
                f"silent once its {info.channels} channels are averaged ({problem}): they "
                "cancel, one is most likely inverted"
            )
        raise BadAudio(path, problem, ["silent"])
    if peak > 1.0 and info.subtype in ("FLOAT", "DOUBLE"):
        # a float file can hold more than full scale, and training takes [-1, 1]; a lossy
        # decoder's small overshoot of a loud file is no such mistake
        problem = f"beyond full scale: peak {peak:.3g} (a float file's samples lie in [-1, 1])"
        raise BadAudio(path, problem, ["over"])
    clipped = float((audio.abs() >= CLIP_LEVEL).float().mean())
    if clipped > CLIP_FRACTION:
        problem = f"clipped: {100 * clipped:.1f} % of samples at full scale (limit 1 %)"
        raise BadAudio(path, problem, ["clipped"])
    changed = info.channels > 1 or info.sample_rate != sample_rate
    if kinds or not keep:  # its length at `sample_rate` is all that is needed
        samples = -(-audio.numel() * sample_rate // info.sample_rate)  # as torchaudio's
    else:
        audio = resample(audio, info.sample_rate, sample_rate)
        samples = audio.numel()
    if samples < segment_length:
        problem = (
            f"too short: {samples} samples at {sample_rate} Hz, "
            f"less than one training segment ({segment_length})"
        )
        raise BadAudio(path, problem, ["short"])
    if kinds:
        # one remedy: a file with both problems needs both settings
        settings = tuple(setting for r in remedies for setting in r.settings)
        purpose = remedies[0].purpose if len(remedies) == 1 else "to average and convert it"
        raise BadAudio(path, ", ".join(problems), kinds, [Remedy(settings, purpose)])
    return (audio if keep else None), changed


__all__ = [
    "BadAudio",
    "CLIP_FRACTION",
    "CLIP_LEVEL",
    "KINDS",
    "RefusedFiles",
    "Rejected",
    "SHOWN",
    "SILENCE_DBFS",
    "advice",
    "check_audio",
]
