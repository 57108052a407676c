"""Shapes, receptive fields and layouts of the image-to-image translation networks (tiny widths to stay fast)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from synthmed.errors import ConfigError
from synthmed.nn.translation import (
    DISCRIMINATOR_NAMES,
    GENERATOR_NAMES,
    MultiScalePatchDiscriminator,
    PatchDiscriminator,
    PixelDiscriminator,
    ResnetGenerator,
    UNetGenerator,
    build_patch_discriminator,
    build_translation_generator,
    unet_depth,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _patch_out_size(size: int, n_layers: int) -> int:
    """Conv arithmetic of the PatchGAN: out = (in + 2p - k) // s + 1 per conv (k=4, p=1)."""
    for stride in [2] * n_layers + [1, 1]:
        size = (size + 2 - 4) // stride + 1
    return size


# ------------------------------------------------------------------------------------------------- U-Net


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize(("c_in", "c_out"), [(1, 1), (1, 3), (3, 1), (2, 1)])
def test_unet_preserves_spatial_shape_and_range(size: int, c_in: int, c_out: int) -> None:
    net = UNetGenerator(c_in, c_out, depth=unet_depth(size), base_channels=4)
    assert net.multiple == size
    y = net(torch.randn(2, c_in, size, size) * 3)
    assert y.shape == (2, c_out, size, size)
    assert y.abs().max() <= 1.0


def test_unet_depth() -> None:
    assert [unet_depth(s) for s in (16, 32, 64, 128, 256)] == [4, 5, 6, 7, 8]
    assert unet_depth(64, min_bottleneck=2) == 5
    assert unet_depth(64, min_bottleneck=4) == 4
    for bad in (8, 28, 48, 100, 0, -16):
        with pytest.raises(ValueError, match="power of two"):
            unet_depth(bad)


def test_unet_rejects_non_multiple_size_naming_it() -> None:
    net = UNetGenerator(1, 1, depth=5, base_channels=4)
    with pytest.raises(ValueError, match=r"48x40.*multiple of 32") as info:
        net(torch.randn(1, 1, 48, 40))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="4-D input"):
        net(torch.randn(1, 32, 32))


def test_unet_smaller_input_than_design_size_works_at_multiples() -> None:
    # depth 4 needs a multiple of 16; 32x48 is one (bottleneck 2x3).
    net = UNetGenerator(1, 2, depth=4, base_channels=4)
    assert net(torch.randn(2, 1, 32, 48)).shape == (2, 2, 32, 48)


def test_unet_dropout_on_in_train_off_in_eval() -> None:
    net = UNetGenerator(1, 1, depth=5, base_channels=4)
    x = torch.randn(2, 1, 32, 32)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))
    no_dropout = UNetGenerator(1, 1, depth=5, base_channels=4, dropout=0.0).train()
    assert torch.equal(no_dropout(x), no_dropout(x))


def test_unet_dropout_sits_in_three_decoder_blocks_after_bottleneck() -> None:
    for depth, expected in ((8, 3), (6, 3), (4, 2), (2, 0)):
        net = UNetGenerator(1, 1, depth=depth, base_channels=2)
        assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == expected, depth


def test_unet_channels_and_reference_parameter_count() -> None:
    # The reference unet_256 (3 -> 3, ngf 64, batch norm) prints "Total number of parameters : 54.414 M".
    net = UNetGenerator(3, 3, depth=8)
    assert round(_params(net) / 1e6, 3) == 54.414
    downs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in downs] == [64, 128, 256, 512, 512, 512, 512, 512]
    # With batch norm only the outermost transposed conv (no norm after it) has a bias; the down convs without a
    # norm after them (outermost, innermost) are bias-free as in the reference (use_bias=False for batch norm).
    assert all(m.bias is None for m in downs)
    ups = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    # modules() lists the outer block's up path after the inner blocks: the outermost transposed conv comes last.
    assert [m.bias is not None for m in ups] == [False] * 7 + [True]


def test_unet_out_activation_none_gives_unbounded_values() -> None:
    net = UNetGenerator(1, 1, depth=4, base_channels=4, out_activation="none")
    assert not any(isinstance(m, nn.Tanh) for m in net.modules())
    with pytest.raises(ValueError, match="out_activation"):
        UNetGenerator(1, 1, depth=4, out_activation="sigmoid")


@pytest.mark.parametrize("norm", ["batch", "instance", "layer", "none"])
def test_unet_norms(norm: str) -> None:
    net = UNetGenerator(2, 1, depth=4, base_channels=4, norm=norm)
    assert net(torch.randn(2, 2, 16, 16)).shape == (2, 1, 16, 16)
    has_bias = [m.bias is not None for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    assert all(has_bias) == (norm != "batch")


def test_unet_3d() -> None:
    net = UNetGenerator(1, 2, depth=3, base_channels=2, norm="instance", spatial_dims=3)
    y = net(torch.randn(1, 1, 8, 16, 8))
    assert y.shape == (1, 2, 8, 16, 8)
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.randn(1, 1, 8, 12, 8))


# ------------------------------------------------------------------------------------------- discriminators


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("size", [64, 128])
def test_patch_discriminator_output_size(n_layers: int, size: int) -> None:
    d = PatchDiscriminator(3, base_channels=4, n_layers=n_layers)
    out = _patch_out_size(size, n_layers)
    assert d(torch.randn(2, 3, size, size)).shape == (2, 1, out, out)


def test_patch_discriminator_receptive_field_values() -> None:
    assert [PatchDiscriminator(1, 2, n).receptive_field for n in (1, 2, 3, 4)] == [16, 34, 70, 142]
    assert PixelDiscriminator(1, 2).receptive_field == 1


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_patch_discriminator_receptive_field_by_gradient(n_layers: int) -> None:
    size = 128
    d = PatchDiscriminator(1, base_channels=4, n_layers=n_layers, norm="none").eval()
    x = torch.randn(1, 1, size, size, requires_grad=True)
    logits = d(x)
    c = logits.shape[-1] // 2
    logits[0, 0, c, c].backward()
    grad = x.grad[0, 0].abs()
    for axis in (0, 1):
        nonzero = torch.nonzero(grad.sum(dim=1 - axis) > 0).flatten()
        lo, hi = int(nonzero.min()), int(nonzero.max())
        assert lo > 0 and hi < size - 1, "window clipped by the border; the test needs a larger input"
        assert hi - lo + 1 == d.receptive_field


def test_patch_discriminator_reference_layout() -> None:
    # The reference basic D (input 6 = pix2pix condition + target, ndf 64, batch norm) prints 2.769 M parameters.
    d = PatchDiscriminator(6)
    assert round(_params(d) / 1e6, 3) == 2.769
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 128, 256, 512, 1]
    assert [m.stride[0] for m in convs] == [2, 2, 2, 1, 1]


def test_patch_discriminator_spectral_norm() -> None:
    d = PatchDiscriminator(2, base_channels=4, spectral_norm=True)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert all(parametrize.is_parametrized(m, "weight") for m in convs)
    assert d(torch.randn(2, 2, 64, 64)).shape == (2, 1, 6, 6)


@pytest.mark.parametrize("num_scales", [1, 2, 3])
def test_multiscale_discriminator_halving_maps(num_scales: int) -> None:
    d = MultiScalePatchDiscriminator(2, base_channels=4, n_layers=2, num_scales=num_scales)
    outs = d(torch.randn(2, 2, 128, 128))
    assert isinstance(outs, list) and len(outs) == num_scales == d.num_scales
    expected = [_patch_out_size(128 // 2**k, 2) for k in range(num_scales)]
    assert [o.shape[-1] for o in outs] == expected
    assert all(o.shape[:2] == (2, 1) for o in outs)
    # Independent networks, one per scale.
    weights = {d_k.model[0].weight.data_ptr() for d_k in d.discriminators}
    assert len(weights) == num_scales


def test_multiscale_pooling_does_not_darken_borders() -> None:
    d = MultiScalePatchDiscriminator(1, base_channels=2, num_scales=2)
    assert torch.allclose(d.downsample(torch.ones(1, 1, 8, 8)), torch.ones(1, 1, 4, 4))


def test_pixel_discriminator_per_pixel_logits() -> None:
    d = PixelDiscriminator(3, base_channels=4)
    assert d(torch.randn(2, 3, 16, 12)).shape == (2, 1, 16, 12)


def test_patch_discriminator_3d() -> None:
    d = PatchDiscriminator(1, base_channels=2, n_layers=1, norm="instance", spatial_dims=3)
    assert d(torch.randn(1, 1, 16, 16, 16)).shape == (1, 1, 6, 6, 6)


# ------------------------------------------------------------------------------------------------- ResNet


@pytest.mark.parametrize("n_blocks", [6, 9])
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_resnet_generator_shape(n_blocks: int, size: int, norm: str) -> None:
    net = ResnetGenerator(3, 2, base_channels=4, n_blocks=n_blocks, norm=norm)
    assert net.multiple == 4
    y = net(torch.randn(2, 3, size, size) * 3)
    assert y.shape == (2, 2, size, size)
    assert y.abs().max() <= 1.0


def test_resnet_generator_rejects_non_multiple_of_4() -> None:
    net = ResnetGenerator(1, 1, base_channels=4, n_blocks=1)
    with pytest.raises(ValueError, match=r"30x32.*multiple of 4"):
        net(torch.randn(1, 1, 30, 32))


def test_resnet_generator_reference_layout_and_dropout() -> None:
    # The reference resnet_9blocks (3 -> 3, ngf 64) prints 11.378 M parameters with its affine-free instance
    # norm; ours has affine instance norms (synthmed.nn.layers.make_norm): 2 * 5248 more parameters.
    net = ResnetGenerator(3, 3)
    norm_params = sum(_params(m) for m in net.modules() if isinstance(m, nn.InstanceNorm2d))
    assert norm_params == 2 * (64 + 128 + 256 + 18 * 256 + 128 + 64)
    assert round((_params(net) - norm_params) / 1e6, 3) == 11.378
    x = torch.randn(1, 1, 16, 16)
    noisy = ResnetGenerator(1, 1, base_channels=4, n_blocks=2, dropout=0.5).train()
    assert sum(isinstance(m, nn.Dropout) for m in noisy.modules()) == 2
    assert not torch.equal(noisy(x), noisy(x))


def test_resnet_generator_3d() -> None:
    net = ResnetGenerator(1, 1, base_channels=2, n_blocks=1, spatial_dims=3)
    assert net(torch.randn(1, 1, 8, 8, 8)).shape == (1, 1, 8, 8, 8)


# ----------------------------------------------------------------------------------------------- builders


def test_build_translation_generator_names() -> None:
    assert GENERATOR_NAMES == ("unet", "unet128", "unet256", "resnet6", "resnet9")
    g = build_translation_generator("unet", 1, 3, image_size=64, base_channels=2)
    assert isinstance(g, UNetGenerator) and g.depth == 6
    assert build_translation_generator("unet128", 1, 1, image_size=128, base_channels=2).depth == 7
    assert build_translation_generator("unet256", 1, 1, image_size=256, base_channels=2).depth == 8
    for name, blocks in (("resnet6", 6), ("resnet9", 9)):
        r = build_translation_generator(name, 1, 1, image_size=64, base_channels=2, norm="instance")
        assert isinstance(r, ResnetGenerator) and r.n_blocks == blocks
        # The U-Net dropout argument does not reach the residual blocks; resnet_dropout does.
        assert not any(isinstance(m, nn.Dropout) for m in r.modules())
    r = build_translation_generator("resnet6", 1, 1, image_size=32, base_channels=2, resnet_dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in r.modules()) == 6
    g = build_translation_generator("unet", 1, 1, image_size=32, base_channels=2, out_activation="none")
    assert not any(isinstance(m, nn.Tanh) for m in g.modules())


def test_build_translation_generator_errors() -> None:
    with pytest.raises(ConfigError, match="unet, unet128, unet256, resnet6, resnet9"):
        build_translation_generator("unet512", 1, 1, image_size=64)
    with pytest.raises(ConfigError, match="power of two"):
        build_translation_generator("unet", 1, 1, image_size=48, base_channels=2)
    with pytest.raises(ConfigError, match="divisible by 128"):
        build_translation_generator("unet128", 1, 1, image_size=64, base_channels=2)
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_translation_generator("resnet6", 1, 1, image_size=30, base_channels=2)
    with pytest.raises(ConfigError, match="norm"):
        build_translation_generator("unet", 1, 1, image_size=64, norm="group")


def test_build_patch_discriminator_names() -> None:
    assert DISCRIMINATOR_NAMES == ("patch", "pixel", "multiscale")
    d = build_patch_discriminator("patch", 2, base_channels=2, n_layers=2)
    assert isinstance(d, PatchDiscriminator) and d.receptive_field == 34
    assert isinstance(build_patch_discriminator("pixel", 2, base_channels=2), PixelDiscriminator)
    m = build_patch_discriminator("multiscale", 2, base_channels=2, num_scales=3, spectral_norm=True)
    assert isinstance(m, MultiScalePatchDiscriminator) and m.num_scales == 3
    assert parametrize.is_parametrized(m.discriminators[2].model[0], "weight")
    with pytest.raises(ConfigError, match="patch, pixel, multiscale"):
        build_patch_discriminator("global", 2)
    with pytest.raises(ConfigError, match="norm"):
        build_patch_discriminator("patch", 2, norm="group")


def test_weights_initialised_as_reference() -> None:
    net = UNetGenerator(1, 1, depth=6)
    convs = [m for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.02) < 1e-3 and abs(weights.mean().item()) < 1e-3
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    gammas = torch.cat([m.weight for m in norms])
    assert abs(gammas.mean().item() - 1.0) < 5e-3
    assert all(torch.count_nonzero(m.bias) == 0 for m in norms)
    assert all(torch.count_nonzero(m.bias) == 0 for m in convs if m.bias is not None)
