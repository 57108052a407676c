"""The GEMM-lowered CPU convolutions equal PyTorch's, forward, backward and double backward."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synthmed.nn.dcgan import DCGANDiscriminator, DCGANGenerator
from synthmed.ops import cpu_conv
from synthmed.ops.cpu_conv import (
    Conv2d,
    ConvTranspose2d,
    _Conv2dGemm,
    _ConvTranspose2dGemm,
    gemm_preferred,
    native_convolutions,
)

CL = torch.channels_last
# (kernel, stride, padding, input size): DCGAN's layers (4/2/1; the 4x4 head; the 1x1 latent layers of the
# transposed stack) and odd sizes, other kernels, strides and paddings.
CONV_GEOMETRIES = [(4, 2, 1, 8), (4, 1, 0, 4), (3, 1, 1, 5), (4, 2, 1, 7), (3, 2, 0, 9)]
TRANSPOSED_GEOMETRIES = [(4, 2, 1, 4), (4, 1, 0, 1), (7, 1, 0, 1), (3, 1, 1, 5), (4, 2, 1, 3), (3, 2, 0, 3)]


def _double(*shape: int, channels_last: bool = True) -> torch.Tensor:
    t = torch.randn(*shape, dtype=torch.float64)
    return (t.contiguous(memory_format=CL) if channels_last and t.dim() == 4 else t).requires_grad_()


@pytest.mark.parametrize(("k", "s", "p", "size"), CONV_GEOMETRIES)
@pytest.mark.parametrize("channels_last", [True, False])
def test_conv_matches_pytorch_and_gradchecks(k: int, s: int, p: int, size: int, channels_last: bool) -> None:
    torch.manual_seed(0)
    x, w = _double(2, 3, size, size, channels_last=channels_last), _double(5, 3, k, k)
    torch.testing.assert_close(_Conv2dGemm.apply(x, w, (s, s), (p, p)), F.conv2d(x, w, None, s, p))
    fn = lambda x, w: _Conv2dGemm.apply(x, w, (s, s), (p, p))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


@pytest.mark.parametrize(("k", "s", "p", "size"), TRANSPOSED_GEOMETRIES)
def test_conv_transpose_matches_pytorch_and_gradchecks(k: int, s: int, p: int, size: int) -> None:
    torch.manual_seed(0)
    x, w = _double(2, 3, size, size), _double(3, 4, k, k)
    torch.testing.assert_close(_ConvTranspose2dGemm.apply(x, w, (s, s), (p, p)), F.conv_transpose2d(x, w, None, s, p))
    fn = lambda x, w: _ConvTranspose2dGemm.apply(x, w, (s, s), (p, p))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


def test_outputs_are_fresh_channels_last_tensors() -> None:
    """Not views: an in-place LeakyReLU right after the layer must work (it raised before the fix)."""
    x = torch.randn(2, 1, 16, 16).contiguous(memory_format=CL).requires_grad_()
    conv = Conv2d(1, 8, 4, 2, 1, bias=False).to(memory_format=CL)
    y = nn.LeakyReLU(0.2, inplace=True)(conv(x))
    assert y.is_contiguous(memory_format=CL)
    y.sum().backward()
    assert x.grad is not None and conv.weight.grad is not None


@pytest.mark.parametrize("channels_last", [True, False])
def test_output_memory_format_is_pytorchs(channels_last: bool) -> None:
    """An NCHW model gets NCHW outputs (``.view`` works), a channels-last model channels-last ones, as nn does."""
    fmt = CL if channels_last else torch.contiguous_format
    x = torch.randn(2, 8, 4, 4).contiguous(memory_format=fmt)
    for ours, theirs in ((ConvTranspose2d(8, 1, 4, 2, 1), nn.ConvTranspose2d(8, 1, 4, 2, 1)),
                         (ConvTranspose2d(8, 16, 4, 2, 1), nn.ConvTranspose2d(8, 16, 4, 2, 1))):
        theirs.load_state_dict(ours.state_dict())
        ours, theirs = ours.to(memory_format=fmt), theirs.to(memory_format=fmt)
        a, b = ours(x), theirs(x)
        torch.testing.assert_close(a, b)
        assert a.stride() == b.stride() or a.shape[1] == 1
        if not channels_last:
            a.view(2, -1)


@pytest.mark.parametrize("shape", [(64, 1, 4, 2, 1), (64, 8, 3, 1, 1)])  # GEMM route / oneDNN route
def test_spectral_norm_runs_one_power_iteration_per_forward(shape: tuple[int, ...]) -> None:
    """A parametrised weight is read once per forward (it was read three times: three power iterations)."""
    from torch.nn.utils.parametrizations import spectral_norm

    c_in, c_out, k, s, p = shape
    ours, theirs = Conv2d(c_in, c_out, k, s, p), nn.Conv2d(c_in, c_out, k, s, p)
    theirs.load_state_dict(ours.state_dict())
    ours, theirs = spectral_norm(ours.to(memory_format=CL)), spectral_norm(theirs.to(memory_format=CL))
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, c_in, 8, 8).contiguous(memory_format=CL).requires_grad_()
    for _ in range(2):
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
    u = "parametrizations.weight.0._u"
    torch.testing.assert_close(ours.state_dict()[u], theirs.state_dict()[u])


def test_kernel_larger_than_input_raises_like_pytorch() -> None:
    """It returned an empty tensor (or an overflow error) instead of PyTorch's message."""
    conv = Conv2d(1, 2, 4).to(memory_format=CL)
    with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
        conv(torch.randn(2, 1, 3, 3).contiguous(memory_format=CL))


def test_uneven_geometry() -> None:
    """Non-square kernel, different strides and paddings per axis, H != W, batch 1, NCHW input."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 7, 10, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(3, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(_Conv2dGemm.apply(x, w, (1, 2), (0, 1)), F.conv2d(x, w, None, (1, 2), (0, 1)))
    torch.testing.assert_close(_ConvTranspose2dGemm.apply(x, wt, (1, 2), (0, 1)),
                               F.conv_transpose2d(x, wt, None, (1, 2), (0, 1)))
    assert torch.autograd.gradcheck(lambda x, w: _Conv2dGemm.apply(x, w, (1, 2), (0, 1)), (x, w))
    assert torch.autograd.gradcheck(lambda x, w: _ConvTranspose2dGemm.apply(x, w, (1, 2), (0, 1)), (x, wt))


def test_rule_selects_the_measured_layers() -> None:
    k4 = (4, 4)
    assert gemm_preferred(False, 1, 64, (64, 64), k4)  # D's first conv, grey image
    assert gemm_preferred(False, 3, 64, (64, 64), k4)  # RGB
    assert not gemm_preferred(False, 64, 128, (32, 32), k4)  # inner layer
    assert gemm_preferred(False, 256, 512, (8, 8), k4) and gemm_preferred(False, 512, 1, (4, 4), k4)  # deep, small
    assert not gemm_preferred(False, 64, 1, (7, 7), (7, 7))  # the 28 px head: oneDNN wins
    assert gemm_preferred(True, 100, 512, (1, 1), k4) and gemm_preferred(True, 100, 64, (1, 1), (7, 7))  # latent
    assert gemm_preferred(True, 512, 256, (4, 4), k4)
    assert gemm_preferred(True, 64, 1, (32, 32), k4) and not gemm_preferred(True, 128, 64, (16, 16), k4)
    assert not gemm_preferred(False, 1, 64, (128, 128), (3, 3))  # unmeasured (a U-Net's first conv): oneDNN


def _uses_gemm(module: nn.Module, inputs: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> int:
    calls = {"n": 0}
    for cls in (_Conv2dGemm, _ConvTranspose2dGemm):
        original = cls.apply

        def counting(*args: object, _original: object = original) -> torch.Tensor:
            calls["n"] += 1
            return _original(*args)  # type: ignore[operator]

        monkeypatch.setattr(cls, "apply", counting)
    module(inputs)
    return calls["n"]


def test_when_the_gemm_route_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = Conv2d(1, 4, 4, 2, 1, bias=True).to(memory_format=CL)
    x = torch.randn(2, 1, 8, 8).contiguous(memory_format=CL)
    assert _uses_gemm(conv, x, monkeypatch) == 1  # training: weight requires grad
    assert _uses_gemm(Conv2d(1, 4, 4, 2, 1), x, monkeypatch) == 0  # an NCHW model keeps PyTorch's kernels
    with torch.no_grad():
        assert _uses_gemm(conv, x, monkeypatch) == 0  # a convolution's inference keeps oneDNN
        transposed = ConvTranspose2d(8, 1, 4, 2, 1).to(memory_format=CL)
        assert _uses_gemm(transposed, torch.randn(2, 8, 4, 4), monkeypatch) == 1  # not this
    with native_convolutions():
        assert _uses_gemm(conv, x, monkeypatch) == 0
    assert cpu_conv._ENABLED
    assert _uses_gemm(Conv2d(1, 4, 4, 2, 1).double().to(memory_format=CL), x.double(), monkeypatch) == 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _uses_gemm(conv, x, monkeypatch) == 0
    for other in (Conv2d(1, 4, 3, 1, 2, dilation=2), Conv2d(1, 4, 3, padding="same"), Conv2d(2, 4, 3, groups=2),
                  Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), Conv2d(1, 4, 1)):
        assert _uses_gemm(other.to(memory_format=CL), x if other.in_channels == 1 else x.repeat(1, 2, 1, 1),
                          monkeypatch) == 0
    with_output_padding = ConvTranspose2d(4, 1, 3, 2, 1, output_padding=1).to(memory_format=CL)
    assert _uses_gemm(with_output_padding, torch.randn(2, 4, 4, 4), monkeypatch) == 0
    assert _uses_gemm(conv, x[0], monkeypatch) == 0  # unbatched (C, H, W)


def _assert_same_as_native(grads: Callable[[], list[torch.Tensor]]) -> None:
    """``grads()`` with synthmed's layers equals ``grads()`` on PyTorch's kernels."""
    fast = grads()
    with native_convolutions():
        native = grads()
    for a, b in zip(fast, native, strict=True):
        # float32 summation order differs (and MKL's varies with alignment): tolerance on the tensor's scale
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parametrize("size", [28, 64])
def test_dcgan_training_step_equals_native(size: int) -> None:
    """A whole G + D forward/backward (with bias and BN) gives PyTorch's gradients to float rounding."""
    torch.manual_seed(0)
    G = DCGANGenerator(latent_dim=16, image_size=size, base_channels=8).to(memory_format=CL)
    D = DCGANDiscriminator(image_size=size, base_channels=8).to(memory_format=CL)
    z = torch.randn(4, 16)

    def grads() -> list[torch.Tensor]:
        G.zero_grad()
        D.zero_grad()
        D(G(z)).sum().backward()
        return [p.grad.clone() for p in [*G.parameters(), *D.parameters()]]

    _assert_same_as_native(grads)


def test_gradient_penalty_through_gemm_layers_equals_native() -> None:
    """WGAN-GP's penalty differentiates the critic's input gradient: the create_graph path must be exact."""
    torch.manual_seed(0)
    D = DCGANDiscriminator(image_size=32, base_channels=64, norm="layer").to(memory_format=CL)
    x = torch.randn(3, 1, 32, 32).contiguous(memory_format=CL)

    def penalty_grads() -> list[torch.Tensor]:
        D.zero_grad()
        xi = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(D(xi).sum(), xi, create_graph=True)
        ((g.flatten(1).norm(dim=1) - 1) ** 2).mean().backward()
        return [p.grad.clone() for p in D.parameters()]

    _assert_same_as_native(penalty_grads)


def test_state_dict_is_plain_torch() -> None:
    """Checkpoints do not change: same keys and shapes as torch.nn layers."""
    assert Conv2d(1, 2, 4).state_dict().keys() == nn.Conv2d(1, 2, 4).state_dict().keys()
    assert isinstance(DCGANDiscriminator(image_size=64).features[0], Conv2d)
    assert isinstance(DCGANGenerator(image_size=64).net[0], ConvTranspose2d)


def test_patches_are_kept_only_for_the_weight_gradient() -> None:
    """A frozen layer (D in the generator step) must not keep its im2col patches alive until backward."""
    conv = Conv2d(1, 8, 4, 2, 1).to(memory_format=CL)
    x = torch.randn(2, 1, 16, 16).contiguous(memory_format=CL).requires_grad_()
    patches = 2 * 8 * 8 * 16

    def saved_sizes() -> list[int]:
        sizes: list[int] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            conv(x).sum().backward()
        return sizes

    assert patches in saved_sizes()  # trainable: the patches are what the weight gradient needs
    conv.weight.requires_grad_(False)
    assert patches not in saved_sizes()


@pytest.mark.parametrize("layer", [Conv2d(4, 16, 4, 2, 1, bias=False), ConvTranspose2d(16, 8, 4, 2, 1, bias=False)])
def test_weight_gradient_arrives_in_the_weights_layout(layer: nn.Module) -> None:
    """The GEMM's weight gradient is channels-last by construction; making it NCHW-contiguous cost two full copies
    per layer and backward (one in the layer, one in autograd's accumulation back to the parameter's layout)."""
    from torch.profiler import ProfilerActivity, profile

    layer = layer.to(memory_format=CL)
    transposed = isinstance(layer, nn.ConvTranspose2d)
    size = 4 if transposed else 8
    assert gemm_preferred(transposed, layer.in_channels, layer.out_channels, (size, size), (4, 4))
    x = torch.randn(2, layer.in_channels, size, size).contiguous(memory_format=CL).requires_grad_()
    y = layer(x)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        y.sum().backward()
    weight_shape = list(layer.weight.shape)
    copies = [e.name for e in prof.events() if e.name in ("aten::copy_", "aten::clone")
              and e.input_shapes and list(e.input_shapes[0]) == weight_shape]
    assert copies == []
    assert layer.weight.grad is not None and layer.weight.grad.stride() == layer.weight.stride()
    reference = layer.weight.detach().clone().requires_grad_()
    op = F.conv2d if isinstance(layer, nn.Conv2d) else F.conv_transpose2d
    op(x.detach(), reference, None, 2, 1).sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.grad)


def test_cpu_kernels_option_switches_the_lowering_for_a_whole_run(tmp_path, monkeypatch) -> None:
    import synthmed
    from synthmed.ops import cpu_conv as module

    calls = []
    original = module._lowered
    monkeypatch.setattr(module, "_lowered", lambda *a, **k: calls.append(1) or original(*a, **k))
    tiny = {"steps": 1, "batch_size": 8, "g_channels": 8, "d_channels": 8, "latent_dim": 8, "progress": False}
    run = synthmed.train(out=tmp_path / "native", cpu_kernels="native", **tiny).run_dir
    assert not calls, "native kernels asked for, synthmed's used"
    assert "cpu_kernels: native" in (run / "config.yaml").read_text()
    synthmed.load(run).sample(2)
    assert not calls, "sampling a native run used synthmed's kernels"
    synthmed.train(out=tmp_path / "auto", **tiny)
    assert calls, "auto never took synthmed's kernels"


def test_layers_off_the_cpu_route_are_pytorchs_own(monkeypatch) -> None:
    """On GPUs (and with native kernels) the layers run PyTorch's own forward, not code copied from its private
    methods (ConvTranspose2d._output_padding, Conv2d._conv_forward)."""
    import inspect

    from synthmed.ops import cpu_conv as module

    source = inspect.getsource(module)
    assert "._output_padding(" not in source and "._conv_forward(" not in source
    seen = []
    for base in (nn.Conv2d, nn.ConvTranspose2d):
        original = base.forward
        monkeypatch.setattr(base, "forward",
                            lambda self, *a, _o=original, **k: seen.append(type(self)) or _o(self, *a, **k))
    x = torch.randn(2, 4, 8, 8)
    with native_convolutions():
        Conv2d(4, 4, 4, 2, 1)(x)
        ConvTranspose2d(4, 4, 4, 2, 1)(x)
    assert seen == [Conv2d, ConvTranspose2d]
