"""Errors meant for people: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class VocoderError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class ConfigError(VocoderError):
    """A configuration is inconsistent or malformed."""


class InputError(VocoderError):
    """A file or tensor given by the user cannot be used; names the file and the problem."""

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


def first_line(error: Exception) -> str:
    """The first line of a library's exception message, to quote inside a one-line error."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
