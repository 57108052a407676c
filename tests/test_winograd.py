"""Winograd F(2x2, 2x2) for 4x4 stride-2 convolutions equals PyTorch's convolutions, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synthmed.nn.dcgan import DCGANDiscriminator, DCGANGenerator
from synthmed.ops import cpu_conv, winograd
from synthmed.ops.cpu_conv import Conv2d, ConvTranspose2d, native_convolutions, winograd_tile, without_winograd
from synthmed.ops.winograd import Conv2dWinograd, ConvTranspose2dWinograd

CL = torch.channels_last


def _double(*shape: int, channels_last: bool) -> torch.Tensor:
    t = torch.randn(*shape, dtype=torch.float64)
    return (t.contiguous(memory_format=CL) if channels_last else t).requires_grad_()


@pytest.mark.parametrize("m", winograd.TILES)
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(("batch", "c_in", "c_out", "h", "w"), [(2, 3, 5, 16, 8), (1, 4, 2, 8, 8)])
def test_convolution_matches_pytorch(m: int, channels_last: bool, batch: int, c_in: int, c_out: int, h: int,
                                     w: int) -> None:
    torch.manual_seed(0)
    x = _double(batch, c_in, h, w, channels_last=channels_last)
    weight = _double(c_out, c_in, 4, 4, channels_last=channels_last)

    def conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return Conv2dWinograd.apply(x, weight, m)

    torch.testing.assert_close(conv(x, weight), F.conv2d(x, weight, None, 2, 1))
    assert torch.autograd.gradcheck(conv, (x, weight))
    assert torch.autograd.gradgradcheck(conv, (x, weight))  # WGAN-GP / R1 go through here


@pytest.mark.parametrize("m", winograd.TILES)
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(("batch", "c_in", "c_out", "h", "w"), [(2, 5, 3, 4, 8), (1, 2, 4, 4, 4)])
def test_transposed_convolution_matches_pytorch(m: int, channels_last: bool, batch: int, c_in: int, c_out: int,
                                                h: int, w: int) -> None:
    torch.manual_seed(0)
    x = _double(batch, c_in, h, w, channels_last=channels_last)
    weight = _double(c_in, c_out, 4, 4, channels_last=channels_last)

    def conv_t(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return ConvTranspose2dWinograd.apply(x, weight, m)

    torch.testing.assert_close(conv_t(x, weight), F.conv_transpose2d(x, weight, None, 2, 1))
    assert torch.autograd.gradcheck(conv_t, (x, weight))
    assert torch.autograd.gradgradcheck(conv_t, (x, weight))


@pytest.mark.parametrize("m", winograd.TILES)
def test_one_dimensional_identity_is_exact(m: int) -> None:
    """AT [(G g) * (BT d)] is the 2-tap correlation y_i = g_0 d_i + g_1 d_(i+1), exactly (float64)."""
    bt, g_t, at = (torch.tensor(t, dtype=torch.float64) for t in winograd._ONE_D[m])
    d, g = torch.randn(100, m + 1, dtype=torch.float64), torch.randn(100, 2, dtype=torch.float64)
    direct = torch.stack([g[:, 0] * d[:, i] + g[:, 1] * d[:, i + 1] for i in range(m)], dim=1)
    torch.testing.assert_close(((g @ g_t.t()) * (d @ bt.t())) @ at.t(), direct, rtol=0, atol=1e-12)


def test_float32_error_is_close_to_direct_convolution() -> None:
    """F(4x4)'s interpolation points cost some float32 accuracy: within 10x direct convolution's error."""
    torch.manual_seed(0)
    x = torch.randn(8, 64, 16, 16, dtype=torch.float64).contiguous(memory_format=CL)
    weight = torch.randn(32, 64, 4, 4, dtype=torch.float64).contiguous(memory_format=CL)
    exact = F.conv2d(x, weight, None, 2, 1)
    direct = (F.conv2d(x.float(), weight.float(), None, 2, 1).double() - exact).abs().max()
    for m in winograd.TILES:
        error = (Conv2dWinograd.apply(x.float(), weight.float(), m).double() - exact).abs().max()
        assert error < 10 * direct, (m, float(error), float(direct))


@pytest.mark.parametrize("m", winograd.TILES)
def test_transforms_and_their_adjoints(m: int) -> None:
    """<T a, b> = <a, T* b> for the input, kernel and output transforms (the backward relies on it)."""
    torch.manual_seed(0)
    n, h, w, c, o = 2, 4 * m, 2 * m, 3, 5
    a2, tiles = (m + 1) ** 2, n * (h // (2 * m)) * (w // (2 * m))
    x = torch.randn(n, h, w, c, dtype=torch.float64)
    v = torch.randn(a2, tiles, 4 * c, dtype=torch.float64)
    dot = torch.vdot
    torch.testing.assert_close(dot(winograd.input_transform(x, m).flatten(), v.flatten()),
                               dot(x.flatten(), winograd.input_transform_adjoint(v, n, h, w, c, m).flatten()))
    weight = torch.randn(o, c, 4, 4, dtype=torch.float64)
    u = torch.randn(a2, o, 4 * c, dtype=torch.float64)
    torch.testing.assert_close(dot(winograd.kernel_transform(weight, m).flatten(), u.flatten()),
                               dot(weight.flatten(), winograd.kernel_transform_adjoint(u, c, m).flatten()))
    mm = torch.randn(a2, tiles, o, dtype=torch.float64)
    y = torch.randn(n, h // 2, w // 2, o, dtype=torch.float64)
    out = winograd.output_transform(mm, torch.empty(n, h // 2, w // 2, o, dtype=torch.float64), m)
    torch.testing.assert_close(dot(out.flatten(), y.flatten()),
                               dot(mm.flatten(), winograd.output_transform_adjoint(y, m).flatten()))


def test_kernel_transform_of_a_constant_kernel() -> None:
    """F(2x2): the centre tap of G g GT sums the four polyphase taps of each (p, q) phase, a corner is one tap."""
    u = winograd.kernel_transform(torch.ones(1, 1, 4, 4, dtype=torch.float64))
    assert u[4].eq(4).all() and u[0].eq(1).all()


def test_geometry_rules() -> None:
    assert winograd.applicable(False, (4, 4), (2, 2), (1, 1), (8, 8))
    assert not winograd.applicable(False, (4, 4), (2, 2), (1, 1), (6, 6))  # output 3x3 does not tile
    assert not winograd.applicable(False, (4, 4), (2, 2), (1, 1), (12, 12), 4)  # output 6x6 into 4x4 tiles
    assert not winograd.applicable(False, (4, 4), (1, 1), (0, 0), (4, 4))  # the 4x4 head
    assert not winograd.applicable(False, (3, 3), (2, 2), (1, 1), (8, 8))
    assert winograd.applicable(True, (4, 4), (2, 2), (1, 1), (4, 4))
    assert not winograd.applicable(True, (4, 4), (2, 2), (1, 1), (7, 7))  # the 28 px network's 7x7 map
    assert not winograd.applicable(False, (4, 4), (2, 2), (1, 1), (8, 8), 3)  # no such tile
    k4, s2, p1 = (4, 4), (2, 2), (1, 1)
    # DCGAN 64 at 64 channels, batch 64: F(2x2) for the deepest layers, F(4x4) for the next, oneDNN before them.
    assert winograd_tile(False, 256, (8, 8), k4, s2, p1, 64) == 2
    assert winograd_tile(False, 128, (16, 16), k4, s2, p1, 64) == 4
    assert winograd_tile(False, 64, (32, 32), k4, s2, p1, 64) is None
    assert winograd_tile(True, 512, (4, 4), k4, s2, p1, 64) == 2
    assert winograd_tile(True, 256, (8, 8), k4, s2, p1, 64) == 4
    assert winograd_tile(True, 128, (16, 16), k4, s2, p1, 64) is None
    # the same networks at 32 channels (WGAN-GP 64)
    assert winograd_tile(False, 128, (8, 8), k4, s2, p1, 64) == 2
    assert winograd_tile(True, 256, (4, 4), k4, s2, p1, 64) == 2
    assert winograd_tile(False, 64, (16, 16), k4, s2, p1, 64) == 4
    assert winograd_tile(True, 128, (8, 8), k4, s2, p1, 64) == 4
    assert winograd_tile(False, 256, (8, 8), k4, s2, p1, 16) is None  # too few tiles to amortise the weights
    assert winograd_tile(False, 512, (8, 8), k4, s2, p1, 64) is None  # wider layer: GEMM
    assert winograd_tile(False, 32, (16, 16), k4, s2, p1, 64) is None  # unmeasured


def _routes(module: torch.nn.Module, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    taken: list[str] = []
    for cls in (Conv2dWinograd, ConvTranspose2dWinograd, cpu_conv._Conv2dGemm, cpu_conv._ConvTranspose2dGemm):
        original = cls.apply

        def record(*args: object, _original: object = original, _name: str = cls.__name__) -> torch.Tensor:
            taken.append(_name)
            return _original(*args)  # type: ignore[operator]

        monkeypatch.setattr(cls, "apply", record)
    module(x)
    return taken


def test_layers_route_deep_stride2_layers_to_winograd(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = Conv2d(256, 8, 4, 2, 1, bias=False).to(memory_format=CL)
    x = torch.randn(64, 256, 8, 8).contiguous(memory_format=CL)
    assert _routes(conv, x, monkeypatch) == ["Conv2dWinograd"]
    assert _routes(conv, x[:16], monkeypatch) == ["_Conv2dGemm"]  # batch 16: the GEMM
    with without_winograd():
        assert _routes(conv, x, monkeypatch) == ["_Conv2dGemm"]
    with native_convolutions():
        assert _routes(conv, x, monkeypatch) == []
    with torch.no_grad():
        assert _routes(conv, x, monkeypatch) == []  # a convolution's inference keeps oneDNN, as the GEMM route
    transposed = ConvTranspose2d(256, 8, 4, 2, 1).to(memory_format=CL)
    with torch.no_grad():  # sampling: transposed layers take it too
        assert _routes(transposed, torch.randn(64, 256, 4, 4), monkeypatch) == ["ConvTranspose2dWinograd"]
    assert _routes(Conv2d(256, 8, 4, 2, 1), x, monkeypatch) == []  # an NCHW model keeps PyTorch's kernels


@pytest.mark.parametrize("layer", [Conv2d(256, 8, 4, 2, 1, bias=False), ConvTranspose2d(256, 8, 4, 2, 1, bias=False)])
def test_weight_gradient_is_channels_last_like_the_weight(layer: torch.nn.Module) -> None:
    layer = layer.to(memory_format=CL)
    size = 4 if isinstance(layer, torch.nn.ConvTranspose2d) else 8
    x = torch.randn(64, 256, size, size).contiguous(memory_format=CL)
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.stride() == layer.weight.stride()


@pytest.mark.parametrize("m", winograd.TILES)
def test_dcgan64_gradients_equal_native(m: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stride-2 layer of a small DCGAN 64 forced onto F(m x m): the whole G + D backward equals PyTorch's.

    (Small batch and widths, so the rule is widened here: at a realistic batch, float32 rounding flips a few
    LeakyReLU slopes at activations near zero and a max-difference comparison stops being meaningful for any
    kernel, PyTorch's own included.)"""
    monkeypatch.setattr(cpu_conv, "winograd_tile",
                        lambda transposed, _c, size, k, s, p, _b: m if winograd.applicable(transposed, k, s, p, size, m)
                        else None)
    torch.manual_seed(0)
    G = DCGANGenerator(latent_dim=16, image_size=64, base_channels=8).to(memory_format=CL)
    D = DCGANDiscriminator(image_size=64, base_channels=8).to(memory_format=CL)
    z = torch.randn(4, 16)
    taken = _routes(torch.nn.Sequential(G, D), z, monkeypatch)
    assert taken.count("ConvTranspose2dWinograd") == 4 and taken.count("Conv2dWinograd") == 4, taken

    def grads() -> list[torch.Tensor]:
        G.zero_grad()
        D.zero_grad()
        D(G(z)).sum().backward()
        return [p.grad.clone() for p in [*G.parameters(), *D.parameters()]]

    fast = grads()
    with native_convolutions():
        native = grads()
    for a, b in zip(fast, native, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
