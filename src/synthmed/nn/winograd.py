"""Winograd F(2x2, 2x2) for the 4x4 stride-2 padding-1 convolutions of DCGAN-style networks, on CPU.

A 4x4 stride-2 convolution is a 2x2 stride-1 convolution over the four polyphase components of its padded input
(space-to-depth: 4x the channels, half the size). Winograd's minimal filtering F(2x2, 2x2) computes each 2x2
output tile of that convolution from a 3x3 input tile with 9 instead of 16 multiply-adds per (input, output)
channel pair: the layer's matrix products shrink by 16/9 = 1.78x. The transforms are additions only (entries 0
and +-1), so the result equals direct convolution to float rounding. On this kind of CPU it pays only where the
products dominate the transforms' memory traffic: deep layers on small maps (measured in
``benchmarks/training_speed.py``; :func:`synthmed.nn.cpu_conv.lowering` routes them).

Backward is exact too, as the adjoints of the same linear maps: the input gradient goes back through the output
transform, the products and the input transform (transposed); the weight gradient is the products of the
transformed input and transformed output gradient, mapped back through the kernel transform. A transposed
convolution is the adjoint of a convolution, so it reuses the same pieces the other way round.

Layout: activations are NHWC (channels-last) tensors; weights are PyTorch's (Cout, Cin, 4, 4) for a convolution and
(Cin, Cout, 4, 4) for a transposed convolution. Shapes: a convolution's input height and width divisible by 4 (the
output, half the size, must tile into 2x2 blocks), a transposed convolution's input height and width even.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# 1-D F(2, 2): input tile d (3), kernel g (2), output y (2): y = AT [(G g) * (BT d)].
_BT = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 1.0]])
_G = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
_AT = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
# 2-D transforms on row-major flattened tiles: (9, 9), (9, 4), (4, 9).
_T_IN = torch.kron(_BT, _BT)
_T_OUT = torch.kron(_AT, _AT)


def _matrix(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return m.to(dtype=like.dtype, device=like.device)


def applicable(transposed: bool, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
               in_hw: tuple[int, int]) -> bool:
    """The geometry this module implements: 4x4 kernel, stride 2, padding 1, sizes that tile."""
    if kernel != (4, 4) or stride != (2, 2) or padding != (1, 1):
        return False
    divisor = 2 if transposed else 4
    return all(s % divisor == 0 and s > 0 for s in in_hw)


# --- the three linear maps and their adjoints ------------------------------------------------------------------
def input_transform(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) -> V (9, T, 4C): padded, space-to-depth, overlapping 3x3 tiles (stride 2), BT d B."""
    n, h, w, c = x.shape
    th, tw = h // 4, w // 4
    padded = F.pad(x, (0, 0, 1, 1, 1, 1))  # (N, H+2, W+2, C)
    # (n, u, p, v, q, c) -> polyphase channels (p, q, c) of the (N, H/2+1, W/2+1) grid, as a strided view.
    s_n, s_h, s_w, s_c = padded.stride()
    tiles = padded.as_strided((3, 3, n, th, tw, 2, 2, c),
                              (2 * s_h, 2 * s_w, s_n, 4 * s_h, 4 * s_w, s_h, s_w, s_c))
    d = tiles.reshape(9, -1)  # one gather copy: (tile position, rest)
    return (_matrix(_T_IN, x) @ d).view(9, n * th * tw, 4 * c)


def input_transform_adjoint(v: torch.Tensor, n: int, h: int, w: int, c: int) -> torch.Tensor:
    """Adjoint of :func:`input_transform`: V-shaped (9, T, 4C) -> (N, H, W, C), overlapping tiles summed."""
    th, tw = h // 4, w // 4
    d = (_matrix(_T_IN, v).t() @ v.reshape(9, -1)).view(3, 3, n, th, tw, 2, 2, c)
    padded = v.new_zeros(n, h + 2, w + 2, c)
    s_n, s_h, s_w, s_c = padded.stride()
    for k in range(3):  # tiles overlap by one grid row/column: scatter-add row by row of the tile
        for m in range(3):
            view = padded.as_strided((n, th, tw, 2, 2, c), (s_n, 4 * s_h, 4 * s_w, s_h, s_w, s_c),
                                     padded.storage_offset() + 2 * k * s_h + 2 * m * s_w)
            view += d[k, m]
    return padded[:, 1:h + 1, 1:w + 1]


def kernel_transform(weight: torch.Tensor) -> torch.Tensor:
    """Convolution weight (O, C, 4, 4) -> U (9, O, 4C): the polyphase 2x2 kernels over (p, q, c), G g GT.

    Written as copies and adds of weight slabs (G has entries 0 and 1) into the layout the products read, so the
    weight is never transposed: 4 of the 9 transformed taps are copies, the rest sums.
    """
    o, c = weight.shape[:2]
    w6 = weight.permute(0, 2, 3, 1).reshape(o, 2, 2, 2, 2, c)  # (o, a, p, b, q, c); a view when channels-last
    g = [[w6[:, a, :, b] for b in range(2)] for a in range(2)]  # each (O, 2, 2, C) = (o, p, q, c)
    u = weight.new_empty(3, 3, o, 2, 2, c)
    for i, a in ((0, 0), (2, 1)):  # rows of G with a single 1
        u[i, 0].copy_(g[a][0])
        u[i, 2].copy_(g[a][1])
        torch.add(g[a][0], g[a][1], out=u[i, 1])
    torch.add(u[0, 0], u[2, 0], out=u[1, 0])  # the row (1, 1) of G: g[0] + g[1]
    torch.add(u[0, 2], u[2, 2], out=u[1, 2])
    torch.add(u[1, 0], u[1, 2], out=u[1, 1])
    return u.view(9, o, 4 * c)


def kernel_transform_adjoint(u: torch.Tensor, c: int) -> torch.Tensor:
    """Adjoint of :func:`kernel_transform`: (9, O, 4C) -> (O, C, 4, 4), channels-last (the weight's own layout)."""
    o = u.shape[1]
    u6 = u.view(3, 3, o, 2, 2, c)
    # Separable: sum the transformed columns j of each kernel column b (j in {b, b+1}), then the rows.
    cols = [[u6[i, b] + u6[i, b + 1] for b in range(2)] for i in range(3)]
    grad = torch.empty((o, c, 4, 4), dtype=u.dtype, device=u.device, memory_format=torch.channels_last)
    g6 = grad.permute(0, 2, 3, 1).view(o, 2, 2, 2, 2, c)  # (o, a, p, b, q, c)
    for a in range(2):
        for b in range(2):
            torch.add(cols[a][b], cols[a + 1][b], out=g6[:, a, :, b])
    return grad


def output_transform(m: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """M (9, T, O) -> AT m A written into ``out`` (N, Ho, Wo, O) (2x2 tiles)."""
    n, ho, wo, o = out.shape
    y = (_matrix(_T_OUT, m) @ m.view(9, -1)).view(2, 2, n, ho // 2, wo // 2, o)
    out.view(n, ho // 2, 2, wo // 2, 2, o).copy_(y.permute(2, 3, 0, 4, 1, 5))
    return out


def output_transform_adjoint(grad: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`output_transform`: (N, Ho, Wo, O) -> (9, T, O)."""
    n, ho, wo, o = grad.shape
    y = grad.reshape(n, ho // 2, 2, wo // 2, 2, o).permute(2, 4, 0, 1, 3, 5).reshape(4, -1)
    return (_matrix(_T_OUT, grad).t() @ y).view(9, n * (ho // 2) * (wo // 2), o)


# --- autograd ---------------------------------------------------------------------------------------------------
def _channels_last_out(like: torch.Tensor, n: int, c: int, h: int, w: int) -> torch.Tensor:
    return torch.empty((n, c, h, w), dtype=like.dtype, device=like.device, memory_format=torch.channels_last)


def _native_grads(ctx: Any, recompute: Any, inputs: tuple[torch.Tensor, torch.Tensor], grad: torch.Tensor
                  ) -> tuple[torch.Tensor | None, ...]:
    """Double backward (gradient penalty, R1) through PyTorch's twice-differentiable kernels."""
    wanted = [t for t, need in zip(inputs, ctx.needs_input_grad[:2], strict=True) if need]
    grads = iter(torch.autograd.grad(recompute(), wanted, grad, create_graph=True))
    return tuple(next(grads) if need else None for need in ctx.needs_input_grad[:2])


class Conv2dWinograd(torch.autograd.Function):
    """``F.conv2d(x, weight, stride=2, padding=1)`` for a 4x4 weight, by F(2x2, 2x2); NCHW-shaped in and out."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        o = weight.shape[0]
        v = input_transform(x.permute(0, 2, 3, 1))
        u = kernel_transform(weight)
        out = _channels_last_out(x, n, o, h // 2, w // 2)
        output_transform(torch.bmm(v, u.transpose(1, 2)), out.permute(0, 2, 3, 1))
        ctx.save_for_backward(x, weight, v if ctx.needs_input_grad[1] else None, u)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, v, u = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _native_grads(ctx, lambda: F.conv2d(x, weight, None, 2, 1), (x, weight), grad)
        n, c, h, w = x.shape
        dm = output_transform_adjoint(grad.permute(0, 2, 3, 1))
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = input_transform_adjoint(torch.bmm(dm, u), n, h, w, c).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            grad_w = kernel_transform_adjoint(torch.bmm(dm.transpose(1, 2), v), c)
        return grad_x, grad_w


class ConvTranspose2dWinograd(torch.autograd.Function):
    """``F.conv_transpose2d(x, weight, stride=2, padding=1)`` for a 4x4 weight (Cin, Cout, 4, 4): the adjoint of
    :class:`Conv2dWinograd` with that weight read as a convolution's (Cout=Cin, Cin=Cout)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        c_out = weight.shape[1]
        dm = output_transform_adjoint(x.permute(0, 2, 3, 1))
        u = kernel_transform(weight)
        full = input_transform_adjoint(torch.bmm(dm, u), n, 2 * h, 2 * w, c_out)
        out = _channels_last_out(x, n, c_out, 2 * h, 2 * w)
        out.permute(0, 2, 3, 1).copy_(full)
        ctx.save_for_backward(x, weight, dm if ctx.needs_input_grad[1] else None, u)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, dm, u = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _native_grads(ctx, lambda: F.conv_transpose2d(x, weight, None, 2, 1), (x, weight), grad)
        n, c_in, h, w = x.shape
        v = input_transform(grad.permute(0, 2, 3, 1))
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _channels_last_out(x, n, c_in, h, w)
            output_transform(torch.bmm(v, u.transpose(1, 2)), grad_x.permute(0, 2, 3, 1))
        if ctx.needs_input_grad[1]:
            grad_w = kernel_transform_adjoint(torch.bmm(dm.transpose(1, 2), v), weight.shape[1])
        return grad_x, grad_w
