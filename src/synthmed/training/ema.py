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


#: The warm-up constant of :func:`ema_beta` every run used before it became ``--ema-warmup``.
DEFAULT_EMA_WARMUP = 10.0


def ema_beta(step: int, beta: float, warmup: float = DEFAULT_EMA_WARMUP) -> float:
    """The decay at ``step``: min(beta, (1 + step) / (warmup + step)).

    The warm-up keeps the random initialisation from dominating the first steps' average; until ``beta`` caps it,
    the average spans about the last (warmup + step) / (warmup - 1) steps (with 10: the last ~11% of the run so
    far). ``warmup=2`` averages every step so far equally (Polyak) until the cap binds (from step
    (2 beta - 1) / (1 - beta): 998 for 0.999); ``warmup=1`` turns the warm-up off (beta from the first step).
    """
    return min(beta, (1.0 + step) / (warmup + step))
