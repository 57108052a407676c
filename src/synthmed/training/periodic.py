"""The trainer's loop state and the small periodic parts that act on it every N steps.

A part has an interval ``every`` and is called after step ``s`` when ``s % every == 0``: loss logging (the one
device sync), the preview picture, the checkpoint, evaluation with the best checkpoint. Each reads and writes
the shared :class:`Loop`; adding periodic work is adding a part, not editing the loop.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from synthmed.errors import SynthmedError, TrainingDiverged
from synthmed.training import checkpoint as ckpt
from synthmed.training import distributed as D
from synthmed.training.losslog import LossLog
from synthmed.training.progress import TrainProgress


@dataclass
class Loop:
    """Where a run is and what it has logged and saved; shared by the trainer's loop and its periodic parts."""

    recipe: Any
    run_dir: Path
    dist: D.DistInfo
    device: torch.device
    log: LossLog
    progress: TrainProgress
    preview_inputs: dict[str, torch.Tensor]
    #: Writes a checkpoint of the current state at ``step`` (a collective under torchrun); its path on rank 0.
    write_checkpoint: Callable[[int, str, dict[str, float]], Path | None]
    keep_checkpoints: int
    step: int = 0
    phase: str = ""
    pending: list[tuple[int, str, dict[str, torch.Tensor]]] = field(default_factory=list)
    last_values: dict[str, float] = field(default_factory=dict)
    last_checkpoint: Path | None = None
    last_saved_step: int = -1

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def record(self, losses: dict[str, torch.Tensor]) -> None:
        """Buffer one step's losses as device tensors (read later, at a sync)."""
        self.pending.append((self.step, self.phase, losses))

    def flush(self) -> None:
        """Read the buffered losses from the device (one sync), log them, stop on NaN/inf."""
        if not self.pending:
            return
        flat = torch.cat([torch.stack([v.float().reshape(()) for v in vals.values()]) for _, _, vals in self.pending])
        if self.dist.enabled:
            flat = D.all_reduce_mean(flat, self.dist.world_size)
        values, rows, offset = flat.tolist(), [], 0
        for step, phase, vals in self.pending:
            rows.append((step, phase, dict(zip(vals.keys(), values[offset:offset + len(vals)], strict=True))))
            offset += len(vals)
        self.pending.clear()
        if self.is_main:
            self.log.append(rows)
        self.last_values = rows[-1][2]
        self.progress.update(self.step, self.last_values)
        self._stop_on_non_finite(rows)

    def _stop_on_non_finite(self, rows: list[tuple[int, str, dict[str, float]]]) -> None:
        bad = [(s, k, v) for s, _, row in rows for k, v in row.items() if not math.isfinite(v)]
        if not bad:
            return
        step, key, value = bad[0]
        where = (f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint
                 else "no checkpoint had been written yet")
        if self.is_main:  # the curves show how it diverged
            from synthmed.viz.curves import plot_losses

            plot_losses(self.run_dir / "losses.csv", self.run_dir / "curves.png", title=f"{self.run_dir.name}: losses")
        raise TrainingDiverged(f"{key} became {value} at step {step}; training stopped and nothing after that was "
                               f"saved; {where}. Lower the learning rates or try loss='wgan-gp'/'hinge'.")

    def save(self) -> None:
        """Flush, write a checkpoint of this step, prune old ones (newest ``keep_checkpoints`` and ``best.*``)."""
        self.flush()
        self.last_saved_step = self.step
        path = self.write_checkpoint(self.step, self.phase, self.last_values)
        if self.is_main:
            self.last_checkpoint = path
            ckpt.prune_checkpoints(self.run_dir / "checkpoints", self.keep_checkpoints)


def write_preview(loop: Loop, step: int) -> Path:
    """``samples/step_XXXXXXXX.png``: what the recipe's preview shows (grid, columns, code frequencies)."""
    from synthmed.viz.preview import save_preview

    path = loop.run_dir / "samples" / f"step_{step:08d}.png"
    return save_preview(path, loop.recipe.preview(loop.preview_inputs),
                        title=f"{loop.run_dir.name}: step {step}")


class Periodic(abc.ABC):
    """A piece of work done after every ``every``-th step."""

    def __init__(self, every: int | None) -> None:
        self.every = every

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0  # type: ignore[operator]

    @abc.abstractmethod
    def __call__(self, loop: Loop) -> None:
        """Do the work for the step the loop has just finished (``loop.step``)."""


class LogLosses(Periodic):
    """Every ``log_every`` steps: read the buffered losses (the loop's only device sync) and log them."""

    def __call__(self, loop: Loop) -> None:
        loop.flush()


class Preview(Periodic):
    """Every ``sample_every`` steps: the recipe's preview picture from its fixed inputs."""

    def __call__(self, loop: Loop) -> None:
        loop.flush()  # on every process: under torchrun the flush is a collective
        if loop.is_main:
            write_preview(loop, loop.step)


class Checkpoint(Periodic):
    """Every ``checkpoint_every`` steps: an atomic, exactly resumable checkpoint."""

    def __call__(self, loop: Loop) -> None:
        loop.save()


class EvaluateAndKeepBest(Periodic):
    """Every ``eval_every`` steps: FID of the sampling generator, or the recipe's validation score; a new best is
    saved and copied to ``best.*``.

    Only the main process scores; a failure or an improvement is shared so every process acts the same.
    """

    def __init__(self, every: int | None, evaluator: Any) -> None:
        super().__init__(every)
        self.evaluator = evaluator

    def _score(self, loop: Loop) -> tuple[bool, BaseException | None]:
        if self.evaluator is None:
            return False, None
        try:
            value = self.evaluator.score(loop.recipe)
            loop.progress.note(f"step {loop.step}: {getattr(self.evaluator, 'metric', 'fid')} {value:.3f}")
            return self.evaluator.record(loop.run_dir, loop.step, value), None
        except Exception as exc:  # shared below, so no process waits forever
            return False, exc

    def __call__(self, loop: Loop) -> None:
        loop.flush()
        improved, failure = self._score(loop)
        if loop.dist.enabled:
            if D.any_process(failure is not None, loop.device):
                raise failure or SynthmedError("training-time evaluation failed on rank 0")
            improved = D.any_process(improved, loop.device)
        elif failure is not None:
            raise failure
        if not improved:
            return
        if loop.last_saved_step != loop.step:
            loop.save()
        if loop.is_main and loop.last_checkpoint is not None:
            from synthmed.training.periodic_eval import copy_as_best

            copy_as_best(loop.last_checkpoint)
