"""A rich progress bar with ETA and the latest losses (silent when disabled or not on the main process)."""

from __future__ import annotations

import time
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    def __init__(self, total_steps: int | None, start_step: int, max_seconds: float | None, enabled: bool) -> None:
        self.enabled = enabled
        self.total_steps = total_steps
        self.start_step = start_step
        self._progress: Progress | None = None
        self._task = None
        if not enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            transient=False,
        )
        # With only a time budget the bar counts seconds; otherwise steps.
        self.max_seconds = max_seconds
        self._started = time.monotonic()
        if total_steps is not None:
            self._task = self._progress.add_task("train", total=total_steps, completed=start_step, losses="")
        else:
            self._task = self._progress.add_task("train", total=max_seconds, completed=0, losses="")

    def __enter__(self) -> TrainProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def note(self, text: str) -> None:
        """A line above the bar (e.g. a periodic FID), kept in the scrollback."""
        if self._progress is not None:
            self._progress.console.print(text)

    def update(self, step: int, losses: dict[str, float]) -> None:
        if self._progress is None or self._task is None:
            return
        text = "  ".join(f"{k} {v:.3f}" for k, v in list(losses.items())[:4])
        if self.total_steps is not None:
            self._progress.update(self._task, completed=step, losses=text)
        else:  # time budget: the bar counts seconds
            elapsed = time.monotonic() - self._started
            self._progress.update(self._task, completed=elapsed, losses=f"step {step}  {text}")
