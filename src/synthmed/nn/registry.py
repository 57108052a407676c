"""Architecture registry: build networks by name from configs and the CLI.

A network family (``arch=``) is one :func:`register_family` call: its generator and discriminator classes and
the options its discriminator accepts, from which a recipe builds the discriminator's keyword arguments and
checks option compatibility. ``GENERATORS`` and ``DISCRIMINATORS`` are filled from the same registrations.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from synthmed.errors import ConfigError
from synthmed.nn.dcgan import DCGANDiscriminator, DCGANGenerator
from synthmed.nn.resnet import ResNetDiscriminator, ResNetGenerator

#: Discriminator options a family may accept: ``norm`` (batch, layer, instance or none; the default comes from
#: the loss's preset), ``minibatch_discrimination`` (a bool) and ``minibatch_std`` (a group size, 0: off).
DISCRIMINATOR_OPTIONS = ("norm", "minibatch_discrimination", "minibatch_std")


@dataclass(frozen=True)
class NetworkFamily:
    """A generator/discriminator pair selected together by ``arch=``.

    Args:
        name: The ``arch=`` value.
        generator: Takes ``latent_dim``, ``out_channels``, ``image_size``, ``base_channels`` (and ``spatial_dims``).
        discriminator: Takes ``in_channels``, ``image_size``, ``base_channels``, ``spectral_norm`` and the
            ``d_options``.
        d_options: Which of :data:`DISCRIMINATOR_OPTIONS` the discriminator accepts; a recipe refuses the others.
        spectral_norm: Spectral norm on every discriminator layer unless the config turns it off (whatever the
            loss's preset).
    """

    name: str
    generator: type[nn.Module]
    discriminator: type[nn.Module]
    d_options: frozenset[str] = frozenset()
    spectral_norm: bool = False

    def accepts(self, option: str) -> bool:
        """Whether the discriminator takes ``option`` (one of :data:`DISCRIMINATOR_OPTIONS`)."""
        return option in self.d_options


#: Every network family by name, in registration order.
FAMILIES: dict[str, NetworkFamily] = {}
GENERATORS: dict[str, type[nn.Module]] = {}
DISCRIMINATORS: dict[str, type[nn.Module]] = {}


def register_family(
    name: str,
    generator: type[nn.Module],
    discriminator: type[nn.Module],
    *,
    d_options: Iterable[str] = (),
    spectral_norm: bool = False,
) -> NetworkFamily:
    """Make ``arch=name`` available (and ``GENERATORS[name]``, ``DISCRIMINATORS[name]``); returns the entry.

    ValueError if the name is taken, an option is unknown, or the discriminator does not take it.
    """
    if name in FAMILIES:
        raise ValueError(f"network family {name!r} is already registered")
    options = frozenset(d_options)
    unknown = sorted(options - set(DISCRIMINATOR_OPTIONS))
    if unknown:
        raise ValueError(f"unknown discriminator options {unknown}; valid: {', '.join(DISCRIMINATOR_OPTIONS)}")
    params = inspect.signature(discriminator).parameters
    missing = sorted(o for o in options | {"spectral_norm"} if o not in params)
    if missing:
        raise ValueError(f"{discriminator.__name__} does not take {', '.join(missing)}")
    family = NetworkFamily(name, generator, discriminator, options, spectral_norm)
    FAMILIES[name] = family
    GENERATORS[name] = generator
    DISCRIMINATORS[name] = discriminator
    return family


def get_family(name: str) -> NetworkFamily:
    """The registered family called ``name``; a one-line ConfigError listing the valid names otherwise."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown arch {name!r}; choose one of {', '.join(FAMILIES)}") from None


register_family("dcgan", DCGANGenerator, DCGANDiscriminator,
                d_options=("norm", "minibatch_discrimination", "minibatch_std"))
register_family("resnet", ResNetGenerator, ResNetDiscriminator, spectral_norm=True)


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
