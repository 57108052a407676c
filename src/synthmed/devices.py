"""Which device a run, a sampler or a feature extractor uses: one rule for every room."""

from __future__ import annotations

import os

import torch

from synthmed.errors import ConfigError


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (this process's GPU under torchrun), then Apple's MPS, then the CPU; otherwise as named,
    refused with one line when it is not there."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for, but no CUDA GPU is available")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if device.index is not None:
                raise ConfigError("under torchrun each process uses the GPU of its LOCAL_RANK: use --device cuda")
            device = torch.device("cuda", local_rank)
        elif device.index is None:
            device = torch.device("cuda", 0)
    return device
