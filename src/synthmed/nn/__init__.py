"""Generator and discriminator networks (2-D or 3-D via ``spatial_dims``) and their registry."""

from synthmed.nn.dcgan import DCGANDiscriminator, DCGANGenerator
from synthmed.nn.init import init_dcgan_weights
from synthmed.nn.minibatch import MinibatchDiscrimination, MinibatchStdDev
from synthmed.nn.registry import (
    DISCRIMINATORS,
    FAMILIES,
    GENERATORS,
    NetworkFamily,
    build_discriminator,
    build_generator,
    count_parameters,
    get_family,
    register_family,
)
from synthmed.nn.resnet import DiscriminatorBlock, GeneratorBlock, ResNetDiscriminator, ResNetGenerator
from synthmed.nn.translation import (
    MultiScalePatchDiscriminator,
    PatchDiscriminator,
    PixelDiscriminator,
    ResnetGenerator,
    UNetGenerator,
    build_patch_discriminator,
    build_translation_generator,
    init_translation_weights,
    unet_depth,
)

__all__ = [
    "DISCRIMINATORS",
    "FAMILIES",
    "GENERATORS",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DiscriminatorBlock",
    "GeneratorBlock",
    "MinibatchDiscrimination",
    "MinibatchStdDev",
    "NetworkFamily",
    "ResNetDiscriminator",
    "ResNetGenerator",
    "build_discriminator",
    "build_generator",
    "count_parameters",
    "get_family",
    "init_dcgan_weights",
    "register_family",
    "MultiScalePatchDiscriminator",
    "PatchDiscriminator",
    "PixelDiscriminator",
    "ResnetGenerator",
    "UNetGenerator",
    "build_patch_discriminator",
    "build_translation_generator",
    "init_translation_weights",
    "unet_depth",
]
