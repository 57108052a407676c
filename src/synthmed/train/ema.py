"""Exponential moving averages of network weights (Karras et al.; Yazici et al. 2019 for GANs)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def update_ema(shadow: nn.Module, source: nn.Module, beta: float) -> None:
    """shadow <- beta * shadow + (1 - beta) * source for parameters; buffers are copied."""
    s_params = [p for p in shadow.parameters()]
    src_params = [p.detach() for p in source.parameters()]
    torch._foreach_lerp_(s_params, src_params, 1.0 - beta)
    for s_buf, buf in zip(shadow.buffers(), source.buffers(), strict=True):
        s_buf.copy_(buf)


def ema_beta(step: int, beta: float) -> float:
    """Warm-up so the average is not dominated by the random initialisation in the first steps."""
    return min(beta, (1.0 + step) / (10.0 + step))


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
