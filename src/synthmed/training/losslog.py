"""``losses.csv``: one row per step, written in blocks at each device sync, truncated on resume."""

from __future__ import annotations

import csv
from pathlib import Path

from synthmed.io import truncate_csv_after_step


class LossLog:
    def __init__(self, path: Path, names: list[str]) -> None:
        self.path = path
        self.names = names
        self.columns = ["step", "phase", *names]

    def start(self, resume_step: int | None) -> None:
        """A new file with its header, or (on resume) the rows up to the checkpoint: later ones are redone."""
        if resume_step is None or not self.path.exists():
            truncate_csv_after_step(self.path, None, header=self.columns)
        else:
            truncate_csv_after_step(self.path, resume_step)

    def append(self, rows: list[tuple[int, str, dict[str, float]]]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            for step, phase, values in rows:
                writer.writerow([step, phase, *(repr(values[n]) if n in values else "" for n in self.names)])
