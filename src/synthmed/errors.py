"""Errors that end a command with a one-line message instead of a traceback."""

from __future__ import annotations

from pathlib import Path


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
