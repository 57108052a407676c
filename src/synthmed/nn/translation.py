"""Image-to-image translation networks: pix2pix U-Net and PatchGAN, CycleGAN ResNet generator, pix2pixHD multi-scale D.

Written from the papers (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks";
Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks"; Wang et al.
2018, "High-Resolution Image Synthesis and Semantic Manipulation with Conditional GANs") with the layer layout of
the authors' reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix, ``models/networks.py``), so that
parameter counts and receptive fields match the published models. Every network works for 2-D images and, via
``spatial_dims=3``, for volumes (MONAI style layer factories from :mod:`synthmed.nn.layers`).

Initialisation is the reference's ``init_type="normal"``: conv weights ~ N(0, 0.02), norm weights ~ N(1, 0.02),
biases 0 (:func:`init_translation_weights`). Convs carry a bias only when the norm after them is not batch norm:
batch norm's shift makes a bias redundant, the reference does the same (``use_bias = norm is InstanceNorm``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from synthmed.errors import ConfigError
from synthmed.nn.init import init_dcgan_weights
from synthmed.nn.layers import (
    NORMS,
    add_spectral_norm,
    avg_pool_cls,
    check_norm,
    conv_cls,
    conv_transpose_cls,
    make_norm,
)

__all__ = [
    "DISCRIMINATOR_NAMES",
    "GENERATOR_NAMES",
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

GENERATOR_NAMES = ("unet", "unet128", "unet256", "resnet6", "resnet9")
DISCRIMINATOR_NAMES = ("patch", "pixel", "multiscale")
OUT_ACTIVATIONS = ("tanh", "none")

# The number of decoder blocks right after the bottleneck that carry dropout: the paper's noise source (the
# "CD" layers of its decoder; the reference's ``num_downs - 5`` blocks at its 256 px depth of 8).
_UNET_DROPOUT_BLOCKS = 3


def init_translation_weights(module: nn.Module) -> None:
    """Initialise ``module`` as the reference does with ``init_type="normal", init_gain=0.02``.

    Conv / transposed-conv weights ~ N(0, 0.02), norm weights ~ N(1, 0.02), all their biases 0. This is exactly
    :func:`synthmed.nn.init.init_dcgan_weights`, reused so the two cannot drift apart.

    Args:
        module: the network (its descendants are initialised too); works with ``model.apply`` as well.
    """
    init_dcgan_weights(module)


def _use_bias(norm: str) -> bool:
    # Batch norm's learned shift subsumes a conv bias; with instance/layer/no norm the reference keeps it.
    return norm != "batch"


def _check_out_activation(out_activation: str) -> str:
    if out_activation not in OUT_ACTIVATIONS:
        raise ValueError(f"unknown out_activation {out_activation!r}; valid: {', '.join(OUT_ACTIVATIONS)}")
    return out_activation


def _reflection_pad_cls(spatial_dims: int) -> type[nn.ReflectionPad2d] | type[nn.ReflectionPad3d]:
    return nn.ReflectionPad2d if spatial_dims == 2 else nn.ReflectionPad3d


def _check_input(name: str, x: torch.Tensor, spatial_dims: int, multiple: int) -> None:
    """One-line ValueError when ``x`` is not (N, C, *spatial) with every spatial size a multiple of ``multiple``."""
    # Python ints only: no tensor ops, so the check costs nothing next to the convolutions.
    if x.dim() != spatial_dims + 2:
        raise ValueError(f"{name} expects a {spatial_dims + 2}-D input (N, C, *spatial), got shape {tuple(x.shape)}")
    spatial = tuple(x.shape[2:])
    if any(s % multiple for s in spatial):
        raise ValueError(
            f"{name} input size {'x'.join(map(str, spatial))} is not a multiple of {multiple} in every spatial "
            f"dimension; resize or pad the images to a multiple of {multiple}"
        )


# --------------------------------------------------------------------------------------------------- U-Net


class _UNetBlock(nn.Module):
    """One U-Net level: down(x) -> inner block -> up, output concatenated with x (except the outermost level).

    Encoder side: [LeakyReLU(0.2)] conv4x4 s2 [norm]; decoder side: ReLU, transposed conv4x4 s2, [norm] [dropout]
    or, at the outermost level, the output activation. The outermost level has no activation before its conv
    (it sees the image) and no norm; the innermost (bottleneck) down conv has no norm either: at 256 px it
    produces a 1x1 map, where batch/instance statistics would be degenerate (instance norm would zero it).
    """

    def __init__(self, outer: int, inner: int, input_channels: int, submodule: nn.Module | None, *,
                 outermost: bool, norm: str, spatial_dims: int, dropout: float, out_activation: str) -> None:
        super().__init__()
        self.outermost = outermost
        conv, convt = conv_cls(spatial_dims), conv_transpose_cls(spatial_dims)
        bias = _use_bias(norm)
        innermost = submodule is None
        down: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2)]
        down.append(conv(input_channels, inner, 4, 2, 1, bias=bias))
        if not (outermost or innermost):
            down.append(make_norm(norm, inner, spatial_dims))
        # Below the bottleneck the decoder sees [skip, upsampled] concatenated: twice the inner channels.
        up_in = inner if innermost else 2 * inner
        # The outermost transposed conv has no norm after it, so it keeps its bias (as the reference).
        up: list[nn.Module] = [nn.ReLU(), convt(up_in, outer, 4, 2, 1, bias=bias or outermost)]
        if outermost:
            if out_activation == "tanh":
                up.append(nn.Tanh())
        else:
            up.append(make_norm(norm, outer, spatial_dims))
            if dropout > 0:
                up.append(nn.Dropout(dropout))
        self.down = nn.Sequential(*down)
        self.submodule = submodule if submodule is not None else nn.Identity()
        self.up = nn.Sequential(*up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.submodule(self.down(x)))
        return y if self.outermost else torch.cat([x, y], dim=1)


class UNetGenerator(nn.Module):
    """pix2pix U-Net generator (Isola et al. 2017, appendix 6.1.1; the reference ``UnetGenerator``).

    ``depth`` stride-2 4x4 conv downsamplings (LeakyReLU 0.2 before each but the first; norm after each except the
    outermost and the innermost), then symmetric 4x4 stride-2 transposed-conv upsamplings (ReLU, norm), with the
    encoder features concatenated onto the decoder at every level. Feature maps are base, 2b, 4b, 8b, 8b, ...
    (capped at 8 * base). Dropout sits in the 3 decoder blocks right after the bottleneck's: pix2pix has no
    input noise, dropout (kept on at test time in the paper) is its source of stochasticity; at depth 8
    (``unet256``) these are exactly the reference's dropout blocks. The output is tanh (images in [-1, 1]) or raw
    values with ``out_activation="none"``.

    Inputs need every spatial size divisible by ``multiple`` (``2**depth``); ``depth`` = log2(size) makes the
    bottleneck 1x1 as in the paper (:func:`unet_depth`).

    Args:
        in_channels: input image channels.
        out_channels: output image channels.
        depth: number of downsamplings (levels); >= 1.
        base_channels: feature maps of the outermost level (the paper's 64).
        norm: ``"batch"`` (pix2pix), ``"instance"``, ``"layer"`` or ``"none"``.
        dropout: dropout probability in the decoder blocks after the bottleneck (0 disables it).
        spatial_dims: 2 for images, 3 for volumes.
        out_activation: ``"tanh"`` or ``"none"``.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int = 8, base_channels: int = 64,
                 norm: str = "batch", dropout: float = 0.5, spatial_dims: int = 2,
                 out_activation: str = "tanh") -> None:
        super().__init__()
        check_norm(norm)
        _check_out_activation(out_activation)
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"UNetGenerator depth must be an int >= 1, got {depth!r}")
        self.depth, self.spatial_dims = depth, spatial_dims
        # chans[i] = feature maps produced by the i-th downsampling (0 = outermost).
        chans = [base_channels * min(2**i, 8) for i in range(depth)]
        block: nn.Module | None = None
        for level in range(depth - 1, -1, -1):
            outermost = level == 0
            # Levels depth-2 .. depth-4 (the first decoder blocks after the bottleneck's), never the outermost.
            noisy = depth - 1 - _UNET_DROPOUT_BLOCKS <= level < depth - 1 and not outermost
            block = _UNetBlock(
                outer=out_channels if outermost else chans[level - 1],
                inner=chans[level],
                input_channels=in_channels if outermost else chans[level - 1],
                submodule=block,
                outermost=outermost,
                norm=norm,
                spatial_dims=spatial_dims,
                dropout=dropout if noisy else 0.0,
                out_activation=out_activation,
            )
        self.model = block
        init_translation_weights(self)

    @property
    def multiple(self) -> int:
        """The spatial sizes the input needs to be divisible by: ``2**depth``."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(type(self).__name__, x, self.spatial_dims, self.multiple)
        return self.model(x)


def unet_depth(image_size: int, min_bottleneck: int = 1) -> int:
    """U-Net depth for ``image_size``: the most downsamplings whose bottleneck is still >= ``min_bottleneck``.

    With the default the bottleneck is 1x1, as in the paper: 256 -> 8, 128 -> 7, 64 -> 6, 32 -> 5, 16 -> 4.

    Args:
        image_size: the (square) image side; a power of two >= 16.
        min_bottleneck: the smallest bottleneck side allowed (>= 1).

    Raises:
        ValueError: ``image_size`` is not a power of two >= 16, or ``min_bottleneck`` leaves no downsampling.
    """
    if not isinstance(image_size, int) or image_size < 16 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 16 for a U-Net, got {image_size!r}")
    if not isinstance(min_bottleneck, int) or min_bottleneck < 1:
        raise ValueError(f"min_bottleneck must be an int >= 1, got {min_bottleneck!r}")
    depth = int(math.log2(image_size)) - math.ceil(math.log2(min_bottleneck))
    if depth < 1:
        raise ValueError(f"min_bottleneck {min_bottleneck} leaves no downsampling at image_size {image_size}")
    return depth


# --------------------------------------------------------------------------------------------------- ResNet


class _ResnetBlock(nn.Module):
    """x + [reflect-pad, conv3x3, norm, ReLU, (dropout), reflect-pad, conv3x3, norm](x), as the reference."""

    def __init__(self, channels: int, norm: str, dropout: float, spatial_dims: int) -> None:
        super().__init__()
        conv, pad = conv_cls(spatial_dims), _reflection_pad_cls(spatial_dims)
        bias = _use_bias(norm)
        layers: list[nn.Module] = [pad(1), conv(channels, channels, 3, bias=bias),
                                   make_norm(norm, channels, spatial_dims), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [pad(1), conv(channels, channels, 3, bias=bias), make_norm(norm, channels, spatial_dims)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator (Zhu et al. 2017, appendix 7.2, after Johnson et al. 2016; reference's name).

    c7s1-b, d2b, d4b, R4b x n_blocks, u2b, ub, c7s1-out: a reflection-padded 7x7 conv, two stride-2 3x3 conv
    downsamplings, ``n_blocks`` residual blocks (reflection padding, no border artefacts), two stride-2 3x3
    transposed-conv upsamplings (``output_padding=1`` restores the exact size), a reflection-padded 7x7 conv to
    ``out_channels`` and tanh. Every inner conv is followed by norm and ReLU. 6 blocks for 128 px, 9 for 256 px.
    (Not :class:`synthmed.nn.ResNetGenerator`, the latent-to-image GAN generator.)

    Args:
        in_channels: input image channels.
        out_channels: output image channels.
        base_channels: feature maps of the first conv (the paper's 64).
        n_blocks: residual blocks at 1/4 resolution.
        norm: ``"instance"`` (CycleGAN), ``"batch"``, ``"layer"`` or ``"none"``.
        dropout: dropout probability inside each residual block (0, the CycleGAN default, disables it).
        spatial_dims: 2 for images, 3 for volumes.
        out_activation: ``"tanh"`` or ``"none"``.
    """

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: float = 0.0, spatial_dims: int = 2,
                 out_activation: str = "tanh") -> None:
        super().__init__()
        check_norm(norm)
        _check_out_activation(out_activation)
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks!r}")
        self.spatial_dims, self.n_blocks = spatial_dims, n_blocks
        conv, convt, pad = conv_cls(spatial_dims), conv_transpose_cls(spatial_dims), _reflection_pad_cls(spatial_dims)
        bias = _use_bias(norm)
        b = base_channels
        layers: list[nn.Module] = [pad(3), conv(in_channels, b, 7, bias=bias), make_norm(norm, b, spatial_dims),
                                   nn.ReLU()]
        for c_in, c_out in ((b, 2 * b), (2 * b, 4 * b)):
            layers += [conv(c_in, c_out, 3, stride=2, padding=1, bias=bias), make_norm(norm, c_out, spatial_dims),
                       nn.ReLU()]
        layers += [_ResnetBlock(4 * b, norm, dropout, spatial_dims) for _ in range(n_blocks)]
        for c_in, c_out in ((4 * b, 2 * b), (2 * b, b)):
            layers += [convt(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=bias),
                       make_norm(norm, c_out, spatial_dims), nn.ReLU()]
        # The last conv has no norm after it, so it keeps its bias whatever the norm.
        layers += [pad(3), conv(b, out_channels, 7)]
        if out_activation == "tanh":
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)
        init_translation_weights(self)

    @property
    def multiple(self) -> int:
        """The spatial sizes the input needs to be divisible by: 4 (two stride-2 stages)."""
        return 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(type(self).__name__, x, self.spatial_dims, self.multiple)
        return self.model(x)


# --------------------------------------------------------------------------------------------- discriminators


def _receptive_field(module: nn.Module) -> int:
    """Receptive field (in input pixels, along one axis) of one output of a chain of convs/pools, in order."""
    # Walk backwards from one output position: r <- (r - 1) * stride + kernel per layer.
    layers = [m for m in module.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.modules.pooling._AvgPoolNd))]
    field = 1
    for m in reversed(layers):
        kernel = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
        stride = m.stride if isinstance(m.stride, int) else m.stride[0]
        dilation = getattr(m, "dilation", 1)
        dilation = dilation if isinstance(dilation, int) else dilation[0]
        field = (field - 1) * stride + dilation * (kernel - 1) + 1
    return field


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017, appendix 6.1.2; reference ``NLayerDiscriminator``).

    Conv4x4 s2 (no norm) + LeakyReLU(0.2), ``n_layers - 1`` conv4x4 s2 + norm + LeakyReLU, one conv4x4 s1 + norm +
    LeakyReLU, and a conv4x4 s1 to one channel: a map of logits, each judging one input patch. Feature maps are
    base, 2b, 4b, 8b, 8b, ... (capped at 8 * base). ``n_layers=3`` is the paper's 70x70 PatchGAN, 1 its 16x16.
    Logits, no sigmoid: the losses use the ``*_with_logits`` forms. For pix2pix the input is the condition
    concatenated with the (real or generated) target, so ``in_channels`` = both channel counts.

    Args:
        in_channels: input channels.
        base_channels: feature maps of the first conv (the paper's 64).
        n_layers: stride-2 convs (>= 1).
        norm: ``"batch"``, ``"instance"``, ``"layer"`` or ``"none"``.
        spatial_dims: 2 for images, 3 for volumes.
        spectral_norm: put spectral normalisation on every conv (after initialisation).
    """

    def __init__(self, in_channels: int, base_channels: int = 64, n_layers: int = 3, norm: str = "batch",
                 spatial_dims: int = 2, spectral_norm: bool = False) -> None:
        super().__init__()
        check_norm(norm)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers!r}")
        self.spatial_dims = spatial_dims
        conv, bias = conv_cls(spatial_dims), _use_bias(norm)
        chans = [base_channels * min(2**i, 8) for i in range(n_layers + 1)]
        # The first conv sees the image: no norm (its statistics would wash out the input), so it keeps a bias.
        layers: list[nn.Module] = [conv(in_channels, chans[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            layers += [conv(chans[i - 1], chans[i], 4, stride, 1, bias=bias), make_norm(norm, chans[i], spatial_dims),
                       nn.LeakyReLU(0.2)]
        layers.append(conv(chans[-1], 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)
        init_translation_weights(self)
        if spectral_norm:
            add_spectral_norm(self)

    @property
    def receptive_field(self) -> int:
        """Side of the input patch one output logit sees (70 for ``n_layers=3``), from the conv arithmetic."""
        return _receptive_field(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PixelGAN (Isola et al. 2017, section 4.4; reference ``PixelDiscriminator``): a logit per pixel.

    Conv1x1 b + LeakyReLU(0.2), conv1x1 2b + norm + LeakyReLU(0.2), conv1x1 to one channel. It judges colour
    statistics only, no spatial structure.

    Args:
        in_channels: input channels.
        base_channels: feature maps of the first conv.
        norm: ``"batch"``, ``"instance"``, ``"layer"`` or ``"none"``.
        spatial_dims: 2 for images, 3 for volumes.
        spectral_norm: put spectral normalisation on every conv (after initialisation).
    """

    def __init__(self, in_channels: int, base_channels: int = 64, norm: str = "batch", spatial_dims: int = 2,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        check_norm(norm)
        conv, bias = conv_cls(spatial_dims), _use_bias(norm)
        b = base_channels
        self.model = nn.Sequential(
            conv(in_channels, b, 1), nn.LeakyReLU(0.2),
            conv(b, 2 * b, 1, bias=bias), make_norm(norm, 2 * b, spatial_dims), nn.LeakyReLU(0.2),
            conv(2 * b, 1, 1, bias=bias),
        )
        init_translation_weights(self)
        if spectral_norm:
            add_spectral_norm(self)

    @property
    def receptive_field(self) -> int:
        """1: each logit sees one pixel."""
        return _receptive_field(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MultiScalePatchDiscriminator(nn.Module):
    """pix2pixHD multi-scale discriminator (Wang et al. 2018, section 3.2): independent PatchGANs at several scales.

    Scale k sees the input average-pooled k times (3x3, stride 2, padding 1, ``count_include_pad=False`` so the
    border is not darkened by the zero padding). The coarse scales give a large receptive field (global
    consistency) at the cost of one small network each; the finest keeps the detail.

    Args:
        in_channels: input channels.
        base_channels: feature maps of each PatchGAN's first conv.
        n_layers: stride-2 convs of each PatchGAN.
        num_scales: number of PatchGANs / scales (>= 1).
        norm: ``"batch"``, ``"instance"``, ``"layer"`` or ``"none"``.
        spatial_dims: 2 for images, 3 for volumes.
        spectral_norm: put spectral normalisation on every conv.
    """

    def __init__(self, in_channels: int, base_channels: int = 64, n_layers: int = 3, num_scales: int = 2,
                 norm: str = "batch", spatial_dims: int = 2, spectral_norm: bool = False) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales!r}")
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(in_channels, base_channels, n_layers, norm, spatial_dims, spectral_norm)
            for _ in range(num_scales)
        )
        self.downsample = avg_pool_cls(spatial_dims)(3, stride=2, padding=1, count_include_pad=False)

    @property
    def num_scales(self) -> int:
        """The number of scales (discriminators)."""
        return len(self.discriminators)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for k, discriminator in enumerate(self.discriminators):
            if k:
                x = self.downsample(x)
            outputs.append(discriminator(x))
        return outputs


# --------------------------------------------------------------------------------------------------- builders


def _check_norm_config(norm: str) -> None:
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


def build_translation_generator(name: str, in_channels: int, out_channels: int, *, image_size: int,
                                base_channels: int = 64, norm: str = "batch", dropout: float = 0.5,
                                out_activation: str = "tanh", resnet_dropout: float = 0.0,
                                spatial_dims: int = 2) -> nn.Module:
    """Build a translation generator by its reference name.

    ``"unet"`` picks the depth with a 1x1 bottleneck at ``image_size`` (:func:`unet_depth`); ``"unet128"`` and
    ``"unet256"`` are the reference's fixed depths 7 and 8; ``"resnet6"`` / ``"resnet9"`` are the CycleGAN
    generators with 6 / 9 residual blocks.

    Args:
        name: one of :data:`GENERATOR_NAMES`.
        in_channels: input image channels.
        out_channels: output image channels.
        image_size: the image side the network will see (checked against the size multiple it needs).
        base_channels: feature maps of the outermost level.
        norm: ``"batch"``, ``"instance"``, ``"layer"`` or ``"none"``.
        dropout: U-Net decoder dropout (ignored by the ResNet generators).
        out_activation: ``"tanh"`` or ``"none"``.
        resnet_dropout: dropout inside the ResNet generators' residual blocks (ignored by the U-Nets).
        spatial_dims: 2 for images, 3 for volumes.

    Raises:
        ConfigError: unknown name, norm or output activation, or an ``image_size`` the network cannot take.
    """
    _check_norm_config(norm)
    if out_activation not in OUT_ACTIVATIONS:
        raise ConfigError(f"unknown out_activation {out_activation!r}; valid: {', '.join(OUT_ACTIVATIONS)}")
    kwargs = {"base_channels": base_channels, "norm": norm, "spatial_dims": spatial_dims,
              "out_activation": out_activation}
    net: UNetGenerator | ResnetGenerator
    if name == "unet":
        try:
            depth = unet_depth(image_size)
        except ValueError as err:
            raise ConfigError(f"generator 'unet': {err}") from None
        net = UNetGenerator(in_channels, out_channels, depth, dropout=dropout, **kwargs)
    elif name in ("unet128", "unet256"):
        net = UNetGenerator(in_channels, out_channels, 7 if name == "unet128" else 8, dropout=dropout, **kwargs)
    elif name in ("resnet6", "resnet9"):
        net = ResnetGenerator(in_channels, out_channels, n_blocks=int(name[6:]), dropout=resnet_dropout, **kwargs)
    else:
        raise ConfigError(f"unknown translation generator {name!r}; valid: {', '.join(GENERATOR_NAMES)}")
    if image_size % net.multiple:
        raise ConfigError(f"generator {name!r} needs image_size divisible by {net.multiple}, got {image_size}")
    return net


def build_patch_discriminator(name: str, in_channels: int, *, base_channels: int = 64, n_layers: int = 3,
                              norm: str = "batch", num_scales: int = 2, spectral_norm: bool = False,
                              spatial_dims: int = 2) -> nn.Module:
    """Build a translation discriminator by name.

    Args:
        name: ``"patch"`` (:class:`PatchDiscriminator`), ``"pixel"`` (:class:`PixelDiscriminator`) or
            ``"multiscale"`` (:class:`MultiScalePatchDiscriminator`).
        in_channels: input channels (for pix2pix: condition + target channels).
        base_channels: feature maps of the first conv.
        n_layers: stride-2 convs of each PatchGAN (ignored by ``"pixel"``).
        norm: ``"batch"``, ``"instance"``, ``"layer"`` or ``"none"``.
        num_scales: scales of ``"multiscale"`` (ignored otherwise).
        spectral_norm: put spectral normalisation on every conv.
        spatial_dims: 2 for images, 3 for volumes.

    Raises:
        ConfigError: unknown name or norm.
    """
    _check_norm_config(norm)
    if name == "patch":
        return PatchDiscriminator(in_channels, base_channels, n_layers, norm, spatial_dims, spectral_norm)
    if name == "pixel":
        return PixelDiscriminator(in_channels, base_channels, norm, spatial_dims, spectral_norm)
    if name == "multiscale":
        return MultiScalePatchDiscriminator(in_channels, base_channels, n_layers, num_scales, norm, spatial_dims,
                                            spectral_norm)
    raise ConfigError(f"unknown translation discriminator {name!r}; valid: {', '.join(DISCRIMINATOR_NAMES)}")
