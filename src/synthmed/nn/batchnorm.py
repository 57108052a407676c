"""Batch-norm statistics for a network whose weights were averaged (EMA generators)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, make_input: Callable[[], torch.Tensor], batches: int = 16) -> None:
    """Re-estimate BatchNorm running statistics of ``module`` from ``batches`` forward passes."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = module.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    module.train()
    for _ in range(batches):
        module(make_input())
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    module.train(was_training)
