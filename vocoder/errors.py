"""Errors meant for people: the CLI prints them as one line and exits with code 2.

An error may carry `Remedy`s: the settings that would fix it, as data. The library words
them in its own terms (`force=True`); the CLI words them as its flags (`--force`) and the
demo for its page, so library text never names a command-line flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class VocoderError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class ConfigError(VocoderError):
    """A configuration is inconsistent or malformed."""


@dataclass(frozen=True)
class Remedy:
    """Settings that, given together, would fix a problem, and what they would do.

    `settings`: (name, value) pairs; a name is a keyword option of the library call that
    raised (`force`, `mel_format`; the CLI's flag of the same name) or a config key (with a
    dot: `data.mel_dir`); the value True switches an option on, and a value in capitals
    (FILE, DIR) is a placeholder. `purpose` follows the settings ("to start over").
    """

    settings: tuple[tuple[str, object], ...]
    purpose: str = ""

    def __str__(self) -> str:  # the library's own wording: `force=True to start over`
        settings = ", ".join(f"{name}={value}" for name, value in self.settings)
        return f"{settings} {self.purpose}".rstrip()


def remedy(purpose: str = "", **settings: object) -> Remedy:
    """`Remedy` from keyword settings: `remedy("to start over", force=True)`."""
    return Remedy(tuple(settings.items()), purpose)


def with_remedies(problem: str, remedies: Sequence[Remedy]) -> str:
    """`problem`, then "; set A or B": the library's own wording of its remedies."""
    if not remedies:
        return problem
    return f"{problem}; set {' or '.join(str(r) for r in remedies)}"


class InputError(VocoderError):
    """A file or tensor given by the user cannot be used; names the file and the problem.

    `remedies`: the settings that would fix it (see `Remedy`); `problem` excludes them.
    """

    def __init__(self, source: str | Path, problem: str, remedies: Sequence[Remedy] = ()):
        self.source = str(source)
        self.problem = problem
        self.remedies = tuple(remedies)
        super().__init__(f"{self.source}: {with_remedies(problem, self.remedies)}")


def some_of(items: list[str], shown: int = 3) -> str:
    """The first `shown` of `items` for a message: `a, b, c and 4 more`."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return f"{', '.join(items[:shown])}{more}"


def first_line(error: Exception) -> str:
    """The first line of a library's exception message, to quote inside a one-line error."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
