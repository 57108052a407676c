"""Shapes, layouts and properties of the generator/discriminator networks (tiny widths to stay fast)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from synthmed.data.dataset import DataInfo
from synthmed.errors import ConfigError
from synthmed.nn import (
    DISCRIMINATORS,
    FAMILIES,
    GENERATORS,
    DCGANDiscriminator,
    DCGANGenerator,
    MinibatchDiscrimination,
    MinibatchStdDev,
    ResNetDiscriminator,
    ResNetGenerator,
    build_discriminator,
    build_generator,
    count_parameters,
    get_family,
    init_dcgan_weights,
    register_family,
)
from synthmed.recipes import build_recipe

LATENT = 16


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _pair(arch: str, size: int, base: int, channels: int = 1, **d_kwargs):
    g = build_generator(arch, latent_dim=LATENT, out_channels=channels, image_size=size, base_channels=base)
    d = build_discriminator(arch, in_channels=channels, image_size=size, base_channels=base, **d_kwargs)
    return g, d


@pytest.mark.parametrize(
    ("arch", "size", "base"),
    [("dcgan", 16, 4), ("dcgan", 28, 4), ("dcgan", 32, 4), ("dcgan", 64, 4), ("dcgan", 128, 8)]
    + [("resnet", 28, 2), ("resnet", 32, 4), ("resnet", 64, 2)],
)
def test_shapes_and_range(arch: str, size: int, base: int) -> None:
    g, d = _pair(arch, size, base, channels=3)
    x = g(torch.randn(2, LATENT))
    assert x.shape == (2, 3, size, size)
    assert x.abs().max() <= 1.0  # tanh
    logits, feats = d(x, return_features=True)
    assert logits.shape == (2,) and feats.shape == (2, d.num_features)
    assert d(x).shape == (2,)


def test_feature_sizes() -> None:
    # DCGAN: last hidden map flattened (64 px, base 8: 64 maps at 4x4); ResNet: pooled 16 x base channels
    assert DCGANDiscriminator(image_size=64, base_channels=8).num_features == 64 * 4 * 4
    assert DCGANDiscriminator(image_size=28, base_channels=8).num_features == 16 * 7 * 7
    assert ResNetDiscriminator(image_size=64, base_channels=2).num_features == 32


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_spatial_dims_3(arch: str) -> None:
    g = build_generator(arch, latent_dim=LATENT, image_size=16, base_channels=2, spatial_dims=3)
    d = build_discriminator(arch, image_size=16, base_channels=2, spatial_dims=3)
    x = g(torch.randn(2, LATENT))
    assert x.shape == (2, 1, 16, 16, 16)
    assert d(x).shape == (2,)


def test_dcgan_layout_matches_pytorch_tutorial() -> None:
    # https://pytorch.org/tutorials/beginner/dcgan_faces_tutorial.html: nz=100, nc=3, ngf=ndf=64
    g = DCGANGenerator(latent_dim=100, out_channels=3, image_size=64, base_channels=64)
    d = DCGANDiscriminator(in_channels=3, image_size=64, base_channels=64)
    assert count_parameters(g) == 3_576_704
    assert count_parameters(d) == 2_765_568
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 3]
    assert not any(
        isinstance(m, (nn.Linear, nn.MaxPool2d, nn.AvgPool2d)) for m in [*g.modules(), *d.modules()]
    )


def test_dcgan_28px_layout() -> None:
    g = DCGANGenerator(latent_dim=LATENT, image_size=28, base_channels=4)
    first = g.net[0]
    assert first.kernel_size == (7, 7) and first.stride == (1, 1) and first.padding == (0, 0)
    d = DCGANDiscriminator(image_size=28, base_channels=4)
    assert d.head.kernel_size == (7, 7)


def test_dcgan_channel_cap() -> None:
    g = DCGANGenerator(latent_dim=LATENT, image_size=128, base_channels=8)
    outs = [m.out_channels for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert outs == [64, 64, 32, 16, 8, 1]  # base * min(2**k, 8)


@pytest.mark.parametrize("size", [8, 20, 48, 100])
def test_bad_image_size(size: int) -> None:
    with pytest.raises(ValueError, match="image_size"):
        DCGANGenerator(image_size=size)
    with pytest.raises(ValueError, match="image_size"):
        ResNetDiscriminator(image_size=size)


def test_bad_norm_and_dims() -> None:
    with pytest.raises(ValueError, match="norm"):
        DCGANDiscriminator(norm="spectral")
    with pytest.raises(ValueError, match="spatial_dims"):
        DCGANGenerator(image_size=16, spatial_dims=1)


@pytest.mark.parametrize(
    ("norm", "kind"), [("instance", nn.InstanceNorm2d), ("layer", nn.GroupNorm), ("none", None)]
)
def test_no_batchnorm_unless_asked(norm: str, kind: type[nn.Module] | None) -> None:
    d = DCGANDiscriminator(image_size=32, base_channels=4, norm=norm)
    mods = list(d.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in mods)
    if kind is not None:
        assert sum(isinstance(m, kind) for m in mods) == 2  # 32 -> 16 -> 8 -> 4: two normalised layers
    assert not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ResNetDiscriminator(image_size=32).modules()
    )


def _weighted(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


@pytest.mark.parametrize("mbd", [False, True])
def test_spectral_norm_when_requested(mbd: bool) -> None:
    d = DCGANDiscriminator(image_size=16, base_channels=4, spectral_norm=True, minibatch_discrimination=mbd)
    assert all(parametrize.is_parametrized(m, "weight") for m in _weighted(d))
    plain = DCGANDiscriminator(image_size=16, base_channels=4, minibatch_discrimination=mbd)
    assert not any(parametrize.is_parametrized(m, "weight") for m in _weighted(plain))
    assert all(
        parametrize.is_parametrized(m, "weight") for m in _weighted(ResNetDiscriminator(image_size=16))
    )
    off = ResNetDiscriminator(image_size=16, base_channels=2, spectral_norm=False)
    assert not any(parametrize.is_parametrized(m, "weight") for m in _weighted(off))
    # power-iteration vectors are buffers: spectral norm adds no parameters
    assert count_parameters(d) == count_parameters(plain)


def test_minibatch_discrimination_sees_the_batch() -> None:
    x = torch.randn(4, 1, 16, 16)
    y = x.clone()
    y[3] = torch.randn(1, 16, 16)
    for mbd, mixes in [(True, True), (False, False)]:
        # eval mode: BatchNorm uses running statistics, so only minibatch discrimination couples samples
        d = DCGANDiscriminator(image_size=16, base_channels=4, minibatch_discrimination=mbd).eval()
        with torch.no_grad():
            changed = not torch.allclose(d(x)[:3], d(y)[:3])
        assert changed == mixes


def test_minibatch_discrimination_layer() -> None:
    layer = MinibatchDiscrimination(12, num_kernels=7, kernel_dim=3)
    x = torch.randn(5, 3, 2, 2)
    out = layer(x)
    assert out.shape == (5, 12 + 7) and layer.out_features == 19
    torch.testing.assert_close(out[:, :12], x.flatten(1))
    assert ((out[:, 12:] > 0) & (out[:, 12:] <= 4)).all()  # sum over the 4 others of exp(-d) in (0, 1]
    assert torch.equal(layer(x[:1])[:, 12:], torch.zeros(1, 7))  # no other sample: 0
    # identical samples: distance 0 to each of the 4 others
    torch.testing.assert_close(layer(x[:1].expand(5, -1, -1, -1))[:, 12:], torch.full((5, 7), 4.0))


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_channels_last_matches_contiguous(arch: str) -> None:
    g, d = _pair(arch, 32, 4, channels=3)
    d.eval()  # in training mode spectral norm advances its power iteration on every call
    z, x = torch.randn(3, LATENT), torch.randn(3, 3, 32, 32)
    g_cl, d_cl = (copy.deepcopy(m).to(memory_format=torch.channels_last) for m in (g, d))
    torch.testing.assert_close(g_cl(z), g(z), atol=1e-5, rtol=1e-4)
    ref = d(x)
    torch.testing.assert_close(d(x.to(memory_format=torch.channels_last)), ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(d_cl(x.to(memory_format=torch.channels_last)), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_bfloat16_autocast(arch: str) -> None:
    g, d = _pair(arch, 16, 4, minibatch_discrimination=True) if arch == "dcgan" else _pair(arch, 16, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, feats = d(g(torch.randn(3, LATENT)), return_features=True)
    assert logits.shape == (3,) and torch.isfinite(logits.float()).all()
    logits.float().sum().backward()
    assert all(p.grad is not None for p in g.parameters())


def test_dcgan_init() -> None:
    g = DCGANGenerator(latent_dim=100, out_channels=1, image_size=64, base_channels=64)
    conv = g.net[3]  # 512 -> 256 transposed conv, 2M weights
    bn = g.net[4]
    assert abs(conv.weight.std().item() - 0.02) < 1e-3 and abs(conv.weight.mean().item()) < 1e-3
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    # also usable through Module.apply, and on spectrally normalised convs (writes the stored original)
    d = DCGANDiscriminator(image_size=16, base_channels=4, spectral_norm=True, norm="none")
    with torch.no_grad():
        for m in _weighted(d):
            m.parametrizations.weight.original.fill_(1.0)
            m.bias.fill_(1.0)
    d.apply(init_dcgan_weights)
    weights = torch.cat([m.parametrizations.weight.original.reshape(-1) for m in _weighted(d)])
    # Filled with 1.0 above: re-initialised weights have mean ~0 and std ~0.02 (a constant would have std 0).
    assert abs(weights.mean().item()) < 0.01 and 0.01 < weights.std().item() < 0.03
    assert not any(m.bias.any() for m in _weighted(d))


def test_registry() -> None:
    assert {"dcgan": DCGANGenerator, "resnet": ResNetGenerator} == GENERATORS
    assert {"dcgan": DCGANDiscriminator, "resnet": ResNetDiscriminator} == DISCRIMINATORS
    assert isinstance(build_generator("resnet", image_size=16, base_channels=2), ResNetGenerator)
    with pytest.raises(ValueError, match="valid: dcgan, resnet"):
        build_generator("stylegan")
    with pytest.raises(ValueError, match="unknown discriminator architecture 'patchgan'"):
        build_discriminator("patchgan")


def test_network_families() -> None:
    assert list(FAMILIES) == ["dcgan", "resnet"]
    table = {name: (f.generator, f.discriminator, f.d_options, f.spectral_norm) for name, f in FAMILIES.items()}
    assert table == {
        "dcgan": (DCGANGenerator, DCGANDiscriminator,
                  frozenset({"norm", "minibatch_discrimination", "minibatch_std"}), False),
        "resnet": (ResNetGenerator, ResNetDiscriminator, frozenset(), True),
    }
    assert {name: f.generator for name, f in FAMILIES.items()} == GENERATORS
    assert {name: f.discriminator for name, f in FAMILIES.items()} == DISCRIMINATORS
    assert get_family("dcgan").accepts("norm") and not get_family("resnet").accepts("norm")
    with pytest.raises(ConfigError, match=r"^unknown arch 'unet'; choose one of dcgan, resnet$"):
        get_family("unet")


@pytest.fixture
def restore_families():
    saved = [(table, dict(table)) for table in (FAMILIES, GENERATORS, DISCRIMINATORS)]
    yield
    for table, contents in saved:
        table.clear()
        table.update(contents)


def test_register_family_checks_its_discriminator_options(restore_families) -> None:
    with pytest.raises(ValueError, match="ResNetDiscriminator does not take norm"):
        register_family("bad", ResNetGenerator, ResNetDiscriminator, d_options=("norm",))
    with pytest.raises(ValueError, match="unknown discriminator options"):
        register_family("bad", DCGANGenerator, DCGANDiscriminator, d_options=("dropout",))
    with pytest.raises(ValueError, match="already registered"):
        register_family("dcgan", DCGANGenerator, DCGANDiscriminator)
    assert "bad" not in FAMILIES and "bad" not in GENERATORS and "bad" not in DISCRIMINATORS


def test_a_registered_family_is_usable_by_name(restore_families) -> None:
    # DCGAN with spectral norm by default and a norm option, but no minibatch discrimination.
    register_family("dcgan-sn", DCGANGenerator, DCGANDiscriminator, d_options=("norm",), spectral_norm=True)
    assert isinstance(build_discriminator("dcgan-sn", image_size=16, base_channels=2), DCGANDiscriminator)
    info = DataInfo(source="toy", channels=1, height=16, width=16)
    tiny = {"g_channels": 2, "d_channels": 2, "latent_dim": 4}
    recipe = build_recipe("unconditional", {"arch": "dcgan-sn", **tiny}, info)
    assert recipe.config.d_norm == "batch" and recipe.config.spectral_norm is True  # bce's norm, the family's SN
    d = recipe.networks["D"]
    assert any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert any(parametrize.is_parametrized(m) for m in d.modules())
    with pytest.raises(ConfigError, match="^minibatch_discrimination is available with arch='dcgan' only$"):
        build_recipe("unconditional", {"arch": "dcgan-sn", "minibatch_discrimination": True, **tiny}, info)
    with pytest.raises(ConfigError, match="^d_norm applies to arch='dcgan' or arch='dcgan-sn'; the resnet "
                                          "discriminator uses spectral norm$"):
        build_recipe("unconditional", {"arch": "resnet", "d_norm": "layer", **tiny}, info)


def _minibatch_features_by_definition(layer: MinibatchDiscrimination, x: torch.Tensor) -> torch.Tensor:
    """o(x_i)_b = sum_{j != i} exp(-||M_i,b - M_j,b||_1), written out with broadcasting (Salimans et al. sec. 3.2)."""
    t = layer.theta * (layer.log_scale.exp() / layer.theta.norm(dim=0))
    m = (x.flatten(1) @ t).view(x.shape[0], layer.num_kernels, layer.kernel_dim)
    d = (m.unsqueeze(1) - m.unsqueeze(0)).abs().sum(-1)
    return (torch.exp(-d) * (1 - torch.eye(x.shape[0])).unsqueeze(-1)).sum(1)


@pytest.mark.parametrize("fast", [False, True])
def test_minibatch_discrimination_matches_its_definition_and_its_gradient(fast: bool) -> None:
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(12, num_kernels=7, kernel_dim=3, fast=fast)
    x = torch.randn(9, 12, requires_grad=True)
    expected = _minibatch_features_by_definition(layer, x)
    got = layer(x)[:, 12:]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(grad_got, grad_expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fast", [False, True])
def test_minibatch_discrimination_in_groups_compares_samples_within_their_group(fast: bool) -> None:
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(12, num_kernels=7, kernel_dim=3, group_size=4, fast=fast)
    x = torch.randn(8, 12)
    got = layer(x)[:, 12:]
    for start in (0, 4):  # each group of 4 is its own minibatch
        torch.testing.assert_close(got[start:start + 4], _minibatch_features_by_definition(layer, x[start:start + 4]),
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="group_size"):
        MinibatchDiscrimination(12, group_size=1)


def test_minibatch_discrimination_has_a_second_derivative_by_default() -> None:
    """Regression: with torch.cdist the layer had no double backward, so R1 with minibatch discrimination failed."""
    layer = MinibatchDiscrimination(12, num_kernels=7, kernel_dim=3)
    x = torch.randn(6, 12, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(x)[:, 12:].sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert layer.theta.grad is not None


# --- minibatch standard deviation (Karras et al. 2018, sec. 3) ----------------------------------------------


def test_minibatch_std_by_hand() -> None:
    # Four samples of one channel on a 1 x 2 map, groups of two:
    #   group (x0, x1): position 0 holds 1, 3 (mean 2, deviations +-1, population std 1);
    #                   position 1 holds 0, 4 (mean 2, deviations +-2, std 2) -> mean over positions 1.5.
    #   group (x2, x3): position 0 holds 5, 9 (std 2); position 1 holds 2, 2 (std sqrt(0 + 1e-8) = 1e-4)
    #                   -> (2 + 1e-4) / 2 = 1.00005.
    # The sample std (dividing by n - 1) would give sqrt(2) instead of 1 at the first position.
    x = torch.tensor([[1.0, 0.0], [3.0, 4.0], [5.0, 2.0], [9.0, 2.0]]).view(4, 1, 1, 2)
    out = MinibatchStdDev(group_size=2)(x)
    assert out.shape == (4, 2, 1, 2)
    torch.testing.assert_close(out[:, :1], x)
    expected = torch.tensor([1.5, 1.5, 1.00005, 1.00005]).view(4, 1, 1, 1).expand(4, 1, 1, 2)
    torch.testing.assert_close(out[:, 1:], expected)
    # Three samples: x2 alone would have no spread (sqrt(1e-8)), which reads as collapse even for real data, so it
    # joins the group before it: (1, 3, 5) has std sqrt(8/3) at position 0, (0, 4, 2) sqrt(8/3) at position 1.
    torch.testing.assert_close(MinibatchStdDev(group_size=2)(x[:3])[:, 1], torch.full((3, 1, 2), (8 / 3) ** 0.5))
    # Five samples in groups of two: (x0, x1), then (x2, x3, x4); one sample alone still gets sqrt(1e-8), not NaN.
    five = torch.cat([x, torch.tensor([7.0, 2.0]).view(1, 1, 1, 2)])
    torch.testing.assert_close(MinibatchStdDev(group_size=2)(five)[:2, 1], out[:2, 1])
    torch.testing.assert_close(MinibatchStdDev(group_size=2)(x[:1])[0, 1], torch.full((1, 2), 1e-4))


def _minibatch_std_by_loop(x: torch.Tensor, group_size: int, num_channels: int) -> torch.Tensor:
    """ProGAN's statistic written out: per group of consecutive samples and per channel group, the population std
    over the samples of each feature, averaged over the group's channels and positions, appended as maps."""
    n, c = x.shape[:2]
    per_group = c // num_channels
    maps = torch.empty(n, num_channels, *x.shape[2:], dtype=x.dtype)
    bounds = [[start, min(start + group_size, n)] for start in range(0, n, group_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:  # a last sample alone joins the group before it
        bounds[-1][1] = bounds.pop()[1]  # pop first: the group before it is then the last
    for start, stop in bounds:
        members = x[start:stop]
        for f in range(num_channels):
            block = members[:, f * per_group:(f + 1) * per_group]
            std = ((block - block.mean(0)).square().mean(0) + 1e-8).sqrt()
            maps[start:stop, f] = std.mean()
    return torch.cat([x, maps], dim=1)


@pytest.mark.parametrize(("n", "c", "group_size", "num_channels", "spatial"), [
    (8, 6, 4, 1, (3, 3)),
    (8, 6, 4, 2, (3, 3)),
    (8, 6, 4, 3, (3, 3)),
    (6, 6, 4, 2, (3, 3)),  # a partial last group of two
    (9, 4, 4, 1, (2, 5)),  # a last sample alone: it joins the group before it (of five)
    (1, 4, 4, 1, (2, 2)),  # a batch of one
    (3, 4, 4, 1, (2, 2)),  # the batch is smaller than one group
    (8, 2, 4, 2, (2, 3, 3)),  # 3-D maps
])
def test_minibatch_std_matches_a_loop_over_its_groups_with_its_gradient(
        n: int, c: int, group_size: int, num_channels: int, spatial: tuple[int, ...]) -> None:
    layer = MinibatchStdDev(group_size, num_channels)
    x = torch.randn(n, c, *spatial, dtype=torch.float64, requires_grad=True)
    got, expected = layer(x), _minibatch_std_by_loop(x, group_size, num_channels)
    assert got.shape == (n, c + num_channels, *spatial) and got.dtype == torch.float64
    torch.testing.assert_close(got, expected)
    weights = torch.randn_like(got)  # a loss that weighs every appended value differently
    (grad_got,) = torch.autograd.grad((got * weights).sum(), x)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), x)
    assert torch.isfinite(grad_got).all()
    torch.testing.assert_close(grad_got, grad_expected)


def test_minibatch_std_keeps_channels_last_and_bfloat16() -> None:
    layer = MinibatchStdDev(4, num_channels=2)
    x = torch.randn(6, 4, 5, 5)
    ref = layer(x)
    cl = layer(x.to(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, ref)
    half = layer(x.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half[:, :4], x.bfloat16())
    # The statistic of the bf16 values computed in fp32, rounded to bf16 once. Computed in bf16, the variance and
    # its square root would each round: with one channel per group and 1 x 1 maps (nothing averages the rounding
    # out) some of the 32 values would then be one bf16 step off.
    per_channel = MinibatchStdDev(4, num_channels=16)
    small = torch.randn(8, 16, 1, 1).bfloat16()
    assert torch.equal(per_channel(small)[:, 16:], per_channel(small.float())[:, 16:].bfloat16())
    torch.testing.assert_close(half.float(), ref, rtol=2e-2, atol=1e-2)
    both = layer(x.bfloat16().to(memory_format=torch.channels_last))
    assert both.dtype == torch.bfloat16 and both.is_contiguous(memory_format=torch.channels_last)


def test_minibatch_std_has_a_second_derivative() -> None:
    # The recipe allows it with R1, which differentiates the discriminator's input gradient.
    x = torch.randn(8, 3, 2, 2, requires_grad=True)
    weights = torch.randn(8, 4, 2, 2)
    (grad,) = torch.autograd.grad((MinibatchStdDev(4)(x) * weights).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(grad.square().sum(), x)
    assert torch.isfinite(second).all() and second.abs().sum() > 0


def test_minibatch_std_runs_no_slow_variance_reduction() -> None:
    # torch.var over the 4 members of a group (a short dim that is not the innermost one) runs a slow CPU
    # reduction: with it the layer doubled the default 28-px discriminator's forward + backward (2.2-3.1x) and
    # halved the training step's speed (paired 600-step runs, docs/default-quality.md, session 8). The layer writes
    # the variance out as a mean of squared deviations. Its cost is measured, not timed here (the machine's load
    # would make a timing test flaky): benchmarks/training_speed.py --configs dcgan28 --experiments minibatch_std.
    x = torch.randn(64, 128, 7, 7, requires_grad=True).contiguous(memory_format=torch.channels_last)
    with torch.profiler.profile() as profile:
        MinibatchStdDev(4)(x).sum().backward()
    called = {event.key for event in profile.key_averages()}
    assert not called & {"aten::var", "aten::var_mean", "aten::std", "aten::std_mean"}, sorted(called)


def test_minibatch_std_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"^group_size must be at least 2 \(got 1\)$"):
        MinibatchStdDev(group_size=1)
    with pytest.raises(ValueError, match=r"^num_channels must be at least 1 \(got 0\)$"):
        MinibatchStdDev(num_channels=0)
    with pytest.raises(ValueError, match="C=4 .*num_channels=3"):
        MinibatchStdDev(num_channels=3)(torch.randn(4, 4, 2, 2))
    assert repr(MinibatchStdDev(8, 2)) == "MinibatchStdDev(group_size=8, num_channels=2)"


def test_dcgan_minibatch_std_couples_the_samples_of_a_group_only() -> None:
    # float64: at initialisation the std map moves the logits by ~1e-7, which float32 rounding could hide
    d = DCGANDiscriminator(image_size=16, base_channels=4, minibatch_std=4).double().eval()
    # eval: batch norm normalises with its running statistics, so only the std layer couples samples
    norms = [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.track_running_stats and not m.training for m in norms)
    x = torch.randn(8, 1, 16, 16, dtype=torch.float64)
    y = x.clone()
    y[0] = torch.randn(1, 16, 16)
    with torch.no_grad():
        before, after = d(x), d(y)
    assert before.shape == (8,)
    assert ((before[1:4] - after[1:4]).abs() > 1e-9).all()  # sample 0's group
    torch.testing.assert_close(before[4:], after[4:], rtol=1e-12, atol=1e-14)  # the other group


def test_dcgan_minibatch_std_reads_one_more_map_and_keeps_its_features() -> None:
    x = torch.randn(8, 3, 32, 32)
    off = DCGANDiscriminator(in_channels=3, image_size=32, base_channels=4)
    on = DCGANDiscriminator(in_channels=3, image_size=32, base_channels=4, minibatch_std=4)
    assert on.num_features == off.num_features == 16 * 4 * 4
    assert on.head.in_channels == off.head.in_channels + 1 == 17
    assert count_parameters(on) == count_parameters(off) + 4 * 4  # the std map's 4 x 4 head weights
    logits, feats = on(x, return_features=True)
    assert logits.shape == (8,) and feats.shape == (8, on.num_features)
    torch.testing.assert_close(feats, on.features(x).flatten(1))  # the maps before the std layer
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = on.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert logits.shape == (8,) and torch.isfinite(logits.float()).all()
    assert DCGANDiscriminator(image_size=16, base_channels=2, spatial_dims=3, minibatch_std=2)(
        torch.randn(4, 1, 16, 16, 16)).shape == (4,)


@pytest.mark.parametrize(("options", "message"), [
    ({"minibatch_std": 1}, r"^minibatch_std is 0 \(off\) or a group of at least 2 samples \(got 1\)$"),
    ({"minibatch_std": -2}, r"\(got -2\)$"),
    ({"minibatch_std": 4, "minibatch_discrimination": True}, "^minibatch_std and minibatch_discrimination do not"),
])
def test_dcgan_minibatch_std_refusals(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DCGANDiscriminator(image_size=16, base_channels=4, **options)


def test_minibatch_std_is_a_dcgan_option_only(restore_families) -> None:
    assert get_family("dcgan").accepts("minibatch_std") and not get_family("resnet").accepts("minibatch_std")
    with pytest.raises(ValueError, match="^ResNetDiscriminator does not take minibatch_std$"):
        register_family("bad", ResNetGenerator, ResNetDiscriminator, d_options=("minibatch_std",))
    info = DataInfo(source="toy", channels=1, height=32, width=32)
    tiny = {"g_channels": 2, "d_channels": 2, "latent_dim": 4}
    with pytest.raises(ConfigError, match="^minibatch_std is available with arch='dcgan' only$"):
        build_recipe("unconditional", {"arch": "resnet", "minibatch_std": 4, **tiny}, info)
