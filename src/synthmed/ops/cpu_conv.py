"""2-D convolutions lowered to one matrix product on CPU where that beats oneDNN (measured, see below).

oneDNN runs the inner DCGAN convolutions at 60-85% of the machine's GEMM peak but the layers at the ends of the
networks at 5-45%: the image-side layers with one or three channels (the discriminator's first convolution, the
generator's last transposed convolution), the latent layer (1x1 input), the transposed convolution of a 4x4 map
and the deep convolutions of 8x8 and 4x4 maps. There, ``im2col`` + one GEMM (or GEMM + ``col2im``) on
channels-last data is 1.2-3x faster forward + backward (``benchmarks/training_speed.py --experiments gemm_conv``
measures it in the whole step). Elsewhere the im2col copy costs more than it saves, so those layers keep oneDNN.

:class:`Conv2d` and :class:`ConvTranspose2d` are drop-in subclasses of the ``torch.nn`` layers (same parameters,
same state-dict keys, same output memory format, same results to float rounding); they take the GEMM route only
for float32 CPU tensors of channels-last models (the trainer's layout) and the shapes :func:`gemm_preferred`
names (convolutions only in training: their inference keeps oneDNN). The deep 4x4 stride-2 layers on maps of
16x16 and less take Winograd's minimal filtering instead (:mod:`synthmed.ops.winograd`, :func:`winograd_tile`):
1.78-2.56x fewer multiply-adds, the same results to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.ops import winograd
from synthmed.ops.conv_backward import differentiable_conv_grads

_ENABLED = True
_WINOGRAD = True


@contextmanager
def native_convolutions() -> Iterator[None]:
    """Within the block every :class:`Conv2d`/:class:`ConvTranspose2d` uses PyTorch's own kernels."""
    global _ENABLED
    previous, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = previous


@contextmanager
def without_winograd() -> Iterator[None]:
    """Within the block the layers :func:`winograd_tile` routes to Winograd take the GEMM route if
    :func:`gemm_preferred` names them, else oneDNN (for measuring)."""
    global _WINOGRAD
    previous, _WINOGRAD = _WINOGRAD, False
    try:
        yield
    finally:
        _WINOGRAD = previous


def gemm_preferred(transposed: bool, in_channels: int, out_channels: int, in_size: tuple[int, int],
                   kernel_size: tuple[int, int]) -> bool:
    """The measured rule (2 cores, AVX-512, batch 64, DCGAN layers; ``benchmarks/training_speed.py``).

    GEMM wins on the image side (<= 4 channels), for transposed convolutions of a <= 4x4 map (the latent layer
    and the first upsampling) and for convolutions of a deep (>= 256 channels) <= 8x8 map (the last downsampling
    and the 4x4 head); oneDNN wins on the inner layers and on the narrow 7x7 head of the 28 px network. Only the
    measured kernels: 4x4 (DCGAN), and any kernel on a 1x1 input (a latent layer); other layers keep oneDNN
    until they are measured.
    """
    positions = in_size[0] * in_size[1]
    if transposed and positions == 1:
        return True
    if kernel_size != (4, 4):
        return False
    if transposed:
        return out_channels <= 4 or positions <= 16
    return in_channels <= 4 or (positions <= 64 and in_channels >= 256)


# (transposed, tile m) -> (largest input map in positions, input channels from, to, fewest output tiles): the
# measured region where F(m x m, 2 x 2) beats the GEMM and oneDNN (see winograd_tile).
_WINOGRAD_RULES: dict[tuple[bool, int], tuple[int, int, int, int]] = {
    (False, 2): (64, 128, 256, 256), (False, 4): (256, 64, 256, 128),
    (True, 2): (16, 256, 512, 256), (True, 4): (64, 128, 512, 128),
}


def winograd_tile(transposed: bool, in_channels: int, in_size: tuple[int, int], kernel_size: tuple[int, int],
                  stride: tuple[int, int], padding: tuple[int, int], batch: int) -> int | None:
    """The output tile m of the Winograd F(m x m, 2 x 2) that computes this 4x4 stride-2 layer fastest, or None
    when the GEMM or oneDNN is faster (same machine; layer by layer, forward + backward, batch 32-64).

    F(2x2) for the deepest layers: convolutions of 128-256-channel <= 8x8 maps, transposed convolutions of
    256-512-channel <= 4x4 maps, from 256 tiles (batch 64 there). F(4x4) for the next ones: convolutions of
    64-256-channel <= 16x16 maps and transposed convolutions of 128-512-channel <= 8x8 maps, from 128 tiles
    (1.2-1.4x faster than oneDNN). Measured losses outside: too few tiles (batch 16 at F(2x2): the weight transforms
    are not amortised), 32x32 maps (the input transform costs what the products save), 512 -> 1024 channels
    (the transformed weights no longer fit in cache).
    """
    positions = in_size[0] * in_size[1]
    for m in winograd.TILES:
        max_positions, min_channels, max_channels, min_tiles = _WINOGRAD_RULES[transposed, m]
        # tiles of the convolution (for a transposed layer: of the convolution it is the adjoint of)
        tiles = batch * positions // ((1 if transposed else 4) * m * m)
        if (positions <= max_positions and min_channels <= in_channels <= max_channels and tiles >= min_tiles
                and winograd.applicable(transposed, kernel_size, stride, padding, in_size, m)):
            return m
    return None


def _im2col(padded: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]
            ) -> torch.Tensor:
    """(B, Hp, Wp, C) channels-last -> (B*Ho*Wo, kh*kw*C) patches, one strided view copied once."""
    b, _, _, c = padded.shape
    sb, sh, sw, sc = padded.stride()
    view = padded.as_strided((b, *out_hw, *kernel, c), (sb, stride[0] * sh, stride[1] * sw, sh, sw, sc))
    return view.reshape(b * out_hw[0] * out_hw[1], kernel[0] * kernel[1] * c)


def _col2im(cols: torch.Tensor, batch: int, in_hw: tuple[int, int], kernel: tuple[int, int],
            stride: tuple[int, int], padded_hw: tuple[int, int], channels: int) -> torch.Tensor:
    """Adjoint of :func:`_im2col`: (B*H*W, kh*kw*C) -> (B, Hp, Wp, C), overlapping patches summed."""
    out = cols.new_zeros(batch, *padded_hw, channels)
    patches = cols.view(batch, *in_hw, *kernel, channels)
    h_span, w_span = stride[0] * (in_hw[0] - 1) + 1, stride[1] * (in_hw[1] - 1) + 1
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            out[:, i:i + h_span:stride[0], j:j + w_span:stride[1], :] += patches[:, :, :, i, j, :]
    return out


def _new_channels_last(like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A fresh (not a view: in-place activations may follow) channels-last output tensor."""
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=torch.channels_last)


def _pad_nhwc(x_nhwc: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    if padding == (0, 0):
        return x_nhwc.contiguous()
    return F.pad(x_nhwc, (0, 0, padding[1], padding[1], padding[0], padding[0]))


def _conv_patches(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
                  ) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """im2col of an NCHW (ideally channels-last) tensor: (patches, output size, padded size)."""
    padded = _pad_nhwc(x.permute(0, 2, 3, 1), padding)
    _, hp, wp, _ = padded.shape
    out_hw = ((hp - kernel[0]) // stride[0] + 1, (wp - kernel[1]) // stride[1] + 1)
    return _im2col(padded, kernel, stride, out_hw), out_hw, (hp, wp)


def _conv_weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(Cout, Cin, kh, kw) -> (kh*kw*Cin, Cout), the row order of :func:`_im2col`'s patches."""
    return weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0])


def _conv_transpose_weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(Cin, Cout, kh, kw) -> (Cin, kh*kw*Cout)."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


class _Conv2dGemm(torch.autograd.Function):
    """Convolution as im2col + GEMM; backward by GEMM + col2im (first order) or by PyTorch (``create_graph``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                padding: tuple[int, int]) -> torch.Tensor:
        kernel = (weight.shape[2], weight.shape[3])
        cols, out_hw, padded_hw = _conv_patches(x, kernel, stride, padding)
        w_mat = _conv_weight_matrix(weight)
        # The patches are needed only for the weight gradient (not for a frozen D in the G step).
        ctx.save_for_backward(x, weight, cols if ctx.needs_input_grad[1] else None, w_mat)
        ctx.geometry = (kernel, stride, padding, out_hw, padded_hw)
        out = _new_channels_last(x, (x.shape[0], weight.shape[0], *out_hw))
        torch.mm(cols, w_mat, out=out.permute(0, 2, 3, 1).view(-1, weight.shape[0]))
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, cols, w_mat = ctx.saved_tensors
        kernel, stride, padding, out_hw, padded_hw = ctx.geometry
        if torch.is_grad_enabled():  # create_graph (gradient penalty, R1): PyTorch's twice-differentiable kernels
            return (*differentiable_conv_grads(grad, x, weight, stride, padding, False, ctx.needs_input_grad[:2]),
                    None, None)
        b, c, h, w = x.shape
        grad_mat = grad.permute(0, 2, 3, 1).reshape(-1, weight.shape[0])
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            # (Cout, kh*kw*Cin) viewed as (Cout, Cin, kh, kw) is the channels-last layout of the weight itself:
            # no copy here, none in autograd's accumulation into .grad.
            grad_w = (grad_mat.t() @ cols).view(-1, *kernel, c).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[0]:
            grad_padded = _col2im(grad_mat @ w_mat.t(), b, out_hw, kernel, stride, padded_hw, c)
            grad_x = grad_padded[:, padding[0]:padding[0] + h, padding[1]:padding[1] + w].permute(0, 3, 1, 2)
        return grad_x, grad_w, None, None


class _ConvTranspose2dGemm(torch.autograd.Function):
    """Transposed convolution as GEMM + col2im (the adjoint of :class:`_Conv2dGemm`)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                padding: tuple[int, int]) -> torch.Tensor:
        b, c, h, w = x.shape
        c_out, kernel = weight.shape[1], (weight.shape[2], weight.shape[3])
        padded_hw = ((h - 1) * stride[0] + kernel[0], (w - 1) * stride[1] + kernel[1])
        x_mat = x.permute(0, 2, 3, 1).reshape(b * h * w, c)
        w_mat = _conv_transpose_weight_matrix(weight)
        full = _col2im(x_mat @ w_mat, b, (h, w), kernel, stride, padded_hw, c_out)
        ctx.save_for_backward(x, weight, x_mat if ctx.needs_input_grad[1] else None, w_mat)
        ctx.geometry = (kernel, stride, padding)
        p = padding
        out = _new_channels_last(x, (b, c_out, padded_hw[0] - 2 * p[0], padded_hw[1] - 2 * p[1]))
        out.permute(0, 2, 3, 1).copy_(full[:, p[0]:padded_hw[0] - p[0], p[1]:padded_hw[1] - p[1]])
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, x_mat, w_mat = ctx.saved_tensors
        kernel, stride, padding = ctx.geometry
        if torch.is_grad_enabled():  # create_graph (gradient penalty, R1): PyTorch's twice-differentiable kernels
            return (*differentiable_conv_grads(grad, x, weight, stride, padding, True, ctx.needs_input_grad[:2]),
                    None, None)
        b, c, h, w = x.shape
        grad_cols = _im2col(_pad_nhwc(grad.permute(0, 2, 3, 1), padding), kernel, stride, (h, w))
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (x_mat.t() @ grad_cols).view(c, *kernel, -1).permute(0, 3, 1, 2)  # channels-last, as above
        if ctx.needs_input_grad[0]:
            grad_x = (grad_cols @ w_mat.t()).view(b, h, w, c).permute(0, 3, 1, 2)
        return grad_x, grad_w, None, None


def _cpu_route(layer: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor) -> bool:
    """Whether synthmed's CPU kernels may take the layer at all; otherwise it is PyTorch's own, untouched."""
    return _ENABLED and x.device.type == "cpu" and layer.padding_mode == "zeros" and isinstance(layer.padding, tuple)


def _gemm_applicable(layer: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor, weight: torch.Tensor,
                     training_only: bool) -> bool:
    """The plain cases the lowering implements, on CPU float32 (``training_only``: while recording gradients),
    for models stored channels-last (as the trainer stores them): the output is then channels-last, as
    PyTorch's own kernels make it for a channels-last weight, so the layer stays a drop-in."""
    recording = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return (
        _ENABLED
        and (recording or not training_only)
        and x.device.type == "cpu"
        and x.dim() == 4
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.shape[2] * weight.shape[3] > 1
        and weight.stride(1) == 1  # channels-last weight (unambiguous for kernels larger than 1x1)
        and not torch.is_autocast_enabled("cpu")
        and layer.groups == 1
        and layer.dilation == (1, 1)
        and layer.padding_mode == "zeros"
        and isinstance(layer.padding, tuple)
    )


def _lowered(layer: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor, weight: torch.Tensor, transposed: bool
             ) -> torch.Tensor | None:
    """The layer by Winograd (:func:`winograd_tile`) or one GEMM (:func:`gemm_preferred`), or None for oneDNN."""
    size = (x.shape[2], x.shape[3])
    tile = (winograd_tile(transposed, layer.in_channels, size, layer.kernel_size, layer.stride, layer.padding,
                          x.shape[0]) if _WINOGRAD else None)
    if tile is not None:
        y = (winograd.ConvTranspose2dWinograd if transposed else winograd.Conv2dWinograd).apply(x, weight, tile)
    elif gemm_preferred(transposed, layer.in_channels, layer.out_channels, size, layer.kernel_size):
        y = (_ConvTranspose2dGemm if transposed else _Conv2dGemm).apply(x, weight, layer.stride, layer.padding)
    else:
        return None
    return y if layer.bias is None else y + layer.bias.view(1, -1, 1, 1)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` lowered to Winograd or im2col + GEMM on CPU for the measured shapes, in training (the
    backward is where the GEMM wins; forward alone oneDNN is as fast or faster for those layers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _cpu_route(self, x):
            return super().forward(x)  # PyTorch's own layer (GPUs, native kernels, other padding modes)
        weight = self.weight  # read once: a parametrised weight (spectral norm) is recomputed on every read
        if (_gemm_applicable(self, x, weight, training_only=True)
                and all(x.shape[2 + i] + 2 * self.padding[i] >= self.kernel_size[i] for i in (0, 1))
                and (y := _lowered(self, x, weight, transposed=False)) is not None):
            return y
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` lowered to Winograd or GEMM + col2im on CPU for the measured shapes (image-side,
    latent and small-map layers), in training and in sampling (its forward wins too)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or self.output_padding != (0, 0) or not _cpu_route(self, x):
            return super().forward(x, output_size)  # PyTorch's own layer
        weight = self.weight  # read once (see Conv2d.forward)
        if (_gemm_applicable(self, x, weight, training_only=False)
                and all((x.shape[2 + i] - 1) * self.stride[i] + self.kernel_size[i] > 2 * self.padding[i]
                        for i in (0, 1))
                and (y := _lowered(self, x, weight, transposed=True)) is not None):
            return y
        # No output size asked for and no output padding: PyTorch's layer computes output_padding (0, 0) too.
        return F.conv_transpose2d(x, weight, self.bias, self.stride, self.padding, self.output_padding, self.groups,
                                  self.dilation)
