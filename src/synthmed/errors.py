"""Errors that end a command with a one-line message instead of a traceback."""

from __future__ import annotations

from pathlib import Path


def one_line(exc: BaseException | object, limit: int | None = None) -> str:
    """An exception's (or any value's) text on one line, whitespace collapsed, the type's name when it has none;
    cut to ``limit`` characters (ending in ``...``) when given, for messages that quote a library's long text."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


class SynthmedError(Exception):
    """A problem the user can fix: the CLI prints ``str(error)`` on one line and exits with code 2."""


class DataError(SynthmedError):
    """Bad or missing input data. The message names the file and what is wrong with it."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConfigError(SynthmedError):
    """An invalid option or combination of options."""


class TrainingDiverged(SynthmedError):
    """Losses became NaN or infinite; the last good checkpoint is kept."""
