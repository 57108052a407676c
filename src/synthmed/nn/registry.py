"""Architecture registry: build networks by name from configs and the CLI."""

from __future__ import annotations

from typing import Any

from torch import nn

from synthmed.nn.dcgan import DCGANDiscriminator, DCGANGenerator
from synthmed.nn.resnet import ResNetDiscriminator, ResNetGenerator

GENERATORS: dict[str, type[nn.Module]] = {"dcgan": DCGANGenerator, "resnet": ResNetGenerator}
DISCRIMINATORS: dict[str, type[nn.Module]] = {"dcgan": DCGANDiscriminator, "resnet": ResNetDiscriminator}


def _lookup(registry: dict[str, type[nn.Module]], kind: str, arch: str) -> type[nn.Module]:
    try:
        return registry[arch]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(registry))
        raise ValueError(f"unknown {kind} architecture {arch!r}; valid: {valid}") from None


def build_generator(arch: str, **kwargs: Any) -> nn.Module:
    """Instantiate ``GENERATORS[arch](**kwargs)``; ValueError listing the valid names otherwise."""
    return _lookup(GENERATORS, "generator", arch)(**kwargs)


def build_discriminator(arch: str, **kwargs: Any) -> nn.Module:
    """Instantiate ``DISCRIMINATORS[arch](**kwargs)``; ValueError listing the valid names otherwise."""
    return _lookup(DISCRIMINATORS, "discriminator", arch)(**kwargs)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (spectral norm's power-iteration vectors are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
