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
