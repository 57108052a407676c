"""What a recipe's ``train_step`` may use from the trainer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from synthmed.train.distributed import DistInfo, all_reduce_gradients


@dataclass
class StepContext:
    """Per-run services for recipes: mixed precision, optimiser steps with gradient averaging, progress."""

    device: torch.device
    optimizers: dict[str, torch.optim.Optimizer]
    dist: DistInfo = field(default_factory=DistInfo)
    precision: str = "fp32"
    step: int = 0
    phase: str = "train"
    total_steps: int | None = None
    #: Draws another training batch (for recipes that take several per step, e.g. WGAN-GP's critic loop).
    draw_batch: Callable[[], dict[str, torch.Tensor]] = field(default=lambda: {})
    _params: dict[str, list[torch.nn.Parameter]] = field(default_factory=dict)

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
        if self.dist.enabled:
            all_reduce_gradients(self._params[name], self.dist.world_size)
        optimizer.step()

    @property
    def progress(self) -> float:
        """Fraction of the run done, for schedules (instance-noise annealing); 0 when the length is open."""
        if not self.total_steps:
            return 0.0
        return min(1.0, self.step / self.total_steps)
