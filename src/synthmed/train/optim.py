"""Optimiser construction with the fastest correct implementation for the device."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adam(params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float],
         device: torch.device, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused kernel on CUDA (one launch for all parameters) and foreach elsewhere."""
    kwargs: dict[str, object] = {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay}
    if device.type == "cuda":
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = True
    return torch.optim.Adam(list(params), **kwargs)  # type: ignore[arg-type]
