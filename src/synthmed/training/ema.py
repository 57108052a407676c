"""Exponential moving averages of network weights (Karras et al.; Yazici et al. 2019 for GANs)."""

from __future__ import annotations

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
