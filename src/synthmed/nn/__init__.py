"""Generator and discriminator networks (2-D or 3-D via ``spatial_dims``) and their registry."""

from synthmed.nn.dcgan import DCGANDiscriminator, DCGANGenerator
from synthmed.nn.init import init_dcgan_weights
from synthmed.nn.minibatch import MinibatchDiscrimination
from synthmed.nn.registry import (
    DISCRIMINATORS,
    GENERATORS,
    build_discriminator,
    build_generator,
    count_parameters,
)
from synthmed.nn.resnet import DiscriminatorBlock, GeneratorBlock, ResNetDiscriminator, ResNetGenerator

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DiscriminatorBlock",
    "GeneratorBlock",
    "MinibatchDiscrimination",
    "ResNetDiscriminator",
    "ResNetGenerator",
    "build_discriminator",
    "build_generator",
    "count_parameters",
    "init_dcgan_weights",
]
