"""What a recipe's ``train_step`` uses: the :class:`StepContext` the trainer hands it, and :func:`frozen`.

Nothing here imports the trainer: a recipe (or a test) can build a context of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """``module``'s parameters need no gradients inside the block (e.g. D in the generator step: its weight
    gradients would be thrown away, a third of its backward pass); their previous flags come back after."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


@contextlib.contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """The modules in eval mode inside the block (no dropout, batch norm's running statistics), then as before."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


def _no_batches() -> dict[str, torch.Tensor]:
    raise RuntimeError("this StepContext has no data: pass draw_batch")


@dataclass
class StepContext:
    """Per-run services for recipes: mixed precision, optimiser steps with gradient averaging, the schedule.

    Args:
        device: where the networks and batches live.
        optimizers: the recipe's optimisers by name (from ``configure_optimizers``).
        precision: ``"bf16"`` (autocast) or ``"fp32"``.
        draw_batch: another training batch (for recipes that take several per step, e.g. WGAN-GP's critic).
        average_gradients: averages a list of parameters' gradients over processes (the trainer sets it under
            torchrun; ``None`` in one process).
        average_values: the mean of a tensor over processes, for statistics every process must share (LeCam's
            anchors); ``None`` in one process.
    """

    device: torch.device
    optimizers: dict[str, torch.optim.Optimizer]
    precision: str = "fp32"
    step: int = 0
    phase: str = "train"
    total_steps: int | None = None
    draw_batch: Callable[[], dict[str, torch.Tensor]] = _no_batches
    average_gradients: Callable[[list[nn.Parameter]], None] | None = None
    average_values: Callable[[torch.Tensor], torch.Tensor] | None = None
    _params: dict[str, list[nn.Parameter]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._params = {
            name: [p for group in opt.param_groups for p in group["params"]]
            for name, opt in self.optimizers.items()
        }

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16 autocast where it helps (GPUs); a no-op in fp32 (bf16 was slower on every CPU measured)."""
        if self.precision == "bf16":
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """Zero the grads of optimiser ``name``, backpropagate ``loss``, average across processes, step."""
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.average_gradients is not None:
            self.average_gradients(self._params[name])
        optimizer.step()

    def mean_over_processes(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` averaged over all processes (itself in one process)."""
        return values if self.average_values is None else self.average_values(values)

    @property
    def progress(self) -> float:
        """Fraction of the run done, for schedules (instance-noise annealing); 0 when the length is open."""
        if not self.total_steps:
            return 0.0
        return min(1.0, self.step / self.total_steps)
