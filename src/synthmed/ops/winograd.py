"""Winograd minimal filtering for the 4x4 stride-2 padding-1 convolutions of DCGAN-style networks, on CPU.

A 4x4 stride-2 convolution is a 2x2 stride-1 convolution over the four polyphase components of its padded input
(space-to-depth: 4x the channels, half the size). Winograd's F(m x m, 2 x 2) computes each m x m output tile of
that convolution from an (m+1) x (m+1) input tile with (m+1)^2 instead of 4 m^2 multiply-adds per (input, output)
channel pair: F(2x2, 2x2) does 9 instead of 16 (1.78x fewer), F(4x4, 2x2) 25 instead of 64 (2.56x). F(2x2, 2x2)'s
transforms are additions (entries 0, +-1); F(4x4, 2x2) interpolates at 0, +-1, -1/2 and infinity and loses a
little more to float32 rounding (a 128 -> 256 channel layer's output: 6.5e-6 of its largest value off the float64
result, against 1.7e-6 for direct convolution and 0.8e-6 for F(2x2); bf16 training rounds at 4e-3). The
transforms cost memory traffic: larger tiles expand the input less ((m+1)^2 / m^2) and save more products, so on
this kind of CPU F(4x4) pays on the wide maps of the inner layers and F(2x2) on the deepest, small ones
(:func:`synthmed.ops.cpu_conv.winograd_tile` chooses, from measurements in
``benchmarks/training_speed.py``).

Backward is exact too, as the adjoints of the same linear maps: the input gradient goes back through the output
transform, the products and the input transform (transposed); the weight gradient is the products of the
transformed input and transformed output gradient, mapped back through the kernel transform. A transposed
convolution is the adjoint of a convolution, so it reuses the same pieces the other way round. A second
derivative (WGAN-GP, R1) goes through PyTorch's ``convolution_backward``.

Layout: activations are NHWC (channels-last) tensors; weights are PyTorch's (Cout, Cin, 4, 4) for a convolution and
(Cin, Cout, 4, 4) for a transposed convolution. Shapes: a convolution's input height and width divisible by 2m (the
output, half the size, must tile into m x m blocks), a transposed convolution's divisible by m.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

from synthmed.ops.conv_backward import differentiable_conv_grads

# 1-D F(m, 2) for a correlation y_i = g_0 d_i + g_1 d_{i+1}: y = AT [(G g) * (BT d)].
_ONE_D: dict[int, tuple[list[list[float]], list[list[float]], list[list[float]]]] = {
    # points 0, 1, infinity
    2: ([[1, -1, 0], [0, 1, 0], [0, -1, 1]],
        [[1, 0], [1, 1], [0, 1]],
        [[1, 1, 0], [0, 1, 1]]),
    # points 0, 1, -1, -1/2, infinity (the lowest float32 error of the point sets tried: 0, +-1 and 2, -2, 1/2, -1/2)
    4: ([[-0.5, -1, 0.5, 1, 0], [0, 0.5, 1.5, 1, 0], [0, -0.5, -0.5, 1, 0], [0, -1, 0, 1, 0], [0, -0.5, -1, 0.5, 1]],
        [[-2, 0], [1 / 3, 1 / 3], [-1, 1], [8 / 3, -4 / 3], [0, 1]],
        [[1, 1, 1, 1, 0], [0, 1, -1, -0.5, 0], [0, 1, 1, 0.25, 0], [0, 1, -1, -0.125, 1]]),
}
TILES = tuple(_ONE_D)


@cache
def _transforms(m: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2-D transforms on row-major flattened tiles: input ((m+1)^2, (m+1)^2), kernel ((m+1)^2, 4), output
    (m^2, (m+1)^2), built in float64 and cast once per dtype and device."""
    bt, g, at = (torch.tensor(t, dtype=torch.float64) for t in _ONE_D[m])
    return tuple(torch.kron(t, t).to(dtype=dtype, device=device) for t in (bt, g, at))  # type: ignore[return-value]


def applicable(transposed: bool, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
               in_hw: tuple[int, int], m: int = 2) -> bool:
    """The geometry this module implements: 4x4 kernel, stride 2, padding 1, sizes that tile into m x m."""
    if kernel != (4, 4) or stride != (2, 2) or padding != (1, 1) or m not in _ONE_D:
        return False
    divisor = m if transposed else 2 * m
    return all(s % divisor == 0 and s > 0 for s in in_hw)


# --- the three linear maps and their adjoints ------------------------------------------------------------------
def _tile_view(padded: torch.Tensor, m: int, n: int, th: int, tw: int, c: int, row: int | None = None,
               col: int | None = None) -> torch.Tensor:
    """(m+1) x (m+1) tiles, stride m, of the polyphase grid of a padded (N, Hp, Wp, C) tensor, as one strided view
    (a, a, N, th, tw, 2, 2, C) over (p, q, c) channels; or the (row, col) element of every tile."""
    s_n, s_h, s_w, s_c = padded.stride()
    a = m + 1
    if row is None or col is None:
        return padded.as_strided((a, a, n, th, tw, 2, 2, c),
                                 (2 * s_h, 2 * s_w, s_n, 2 * m * s_h, 2 * m * s_w, s_h, s_w, s_c))
    return padded.as_strided((n, th, tw, 2, 2, c), (s_n, 2 * m * s_h, 2 * m * s_w, s_h, s_w, s_c),
                             padded.storage_offset() + 2 * row * s_h + 2 * col * s_w)


def input_transform(x: torch.Tensor, m: int = 2) -> torch.Tensor:
    """(N, H, W, C) -> V ((m+1)^2, T, 4C): padded, space-to-depth, overlapping tiles (stride m), BT d B."""
    n, h, w, c = x.shape
    th, tw = h // (2 * m), w // (2 * m)
    t_in = _transforms(m, x.dtype, x.device)[0]
    padded = F.pad(x, (0, 0, 1, 1, 1, 1))  # (N, H+2, W+2, C)
    d = _tile_view(padded, m, n, th, tw, c).reshape((m + 1) ** 2, -1)  # one gather copy
    return (t_in @ d).view((m + 1) ** 2, n * th * tw, 4 * c)


def input_transform_adjoint(v: torch.Tensor, n: int, h: int, w: int, c: int, m: int = 2) -> torch.Tensor:
    """Adjoint of :func:`input_transform`: ((m+1)^2, T, 4C) -> (N, H, W, C), overlapping tiles summed."""
    th, tw = h // (2 * m), w // (2 * m)
    a = m + 1
    t_in = _transforms(m, v.dtype, v.device)[0]
    d = (t_in.t() @ v.reshape(a * a, -1)).view(a, a, n, th, tw, 2, 2, c)
    padded = v.new_empty(n, h + 2, w + 2, c)
    grid = padded.view(n, h // 2 + 1, 2, w // 2 + 1, 2, c)  # (n, u, p, v, q, c): the polyphase grid
    # The first m rows and columns of the tiles cover the grid but its last row and column exactly once: one copy.
    grid[:, :m * th, :, :m * tw].view(n, th, m, 2, tw, m, 2, c).copy_(d[:m, :m].permute(2, 3, 0, 5, 4, 1, 6, 7))
    grid[:, m * th:].zero_()
    grid[:, :, :, m * tw:].zero_()
    # Tile row m and column m overlap the next tile (or the last grid row/column): add them.
    for col in range(a):
        _tile_view(padded, m, n, th, tw, c, m, col).add_(d[m, col])
    for row in range(m):
        _tile_view(padded, m, n, th, tw, c, row, m).add_(d[row, m])
    return padded[:, 1:h + 1, 1:w + 1]


def kernel_transform(weight: torch.Tensor, m: int = 2) -> torch.Tensor:
    """Convolution weight (O, C, 4, 4) -> U ((m+1)^2, O, 4C): the polyphase 2x2 kernels over (p, q, c), G g GT."""
    o, c = weight.shape[:2]
    w6 = weight.permute(0, 2, 3, 1).reshape(o, 2, 2, 2, 2, c)  # (o, a, p, b, q, c); a view when channels-last
    if m != 2:
        g = w6.permute(1, 3, 0, 2, 4, 5).reshape(4, -1)  # (a, b) x (o, p, q, c)
        return (_transforms(m, weight.dtype, weight.device)[1] @ g).view((m + 1) ** 2, o, 4 * c)
    # F(2x2): copies and adds of weight slabs (G has entries 0 and 1), no transpose of the weight.
    g2 = [[w6[:, a, :, b] for b in range(2)] for a in range(2)]  # each (O, 2, 2, C) = (o, p, q, c)
    u = weight.new_empty(3, 3, o, 2, 2, c)
    for i, a in ((0, 0), (2, 1)):  # rows of G with a single 1
        u[i, 0].copy_(g2[a][0])
        u[i, 2].copy_(g2[a][1])
        torch.add(g2[a][0], g2[a][1], out=u[i, 1])
    torch.add(u[0, 0], u[2, 0], out=u[1, 0])  # the row (1, 1) of G: g[0] + g[1]
    torch.add(u[0, 2], u[2, 2], out=u[1, 2])
    torch.add(u[1, 0], u[1, 2], out=u[1, 1])
    return u.view(9, o, 4 * c)


def kernel_transform_adjoint(u: torch.Tensor, c: int, m: int = 2) -> torch.Tensor:
    """Adjoint of :func:`kernel_transform`: ((m+1)^2, O, 4C) -> (O, C, 4, 4), channels-last (the weight's layout)."""
    o = u.shape[1]
    grad = torch.empty((o, c, 4, 4), dtype=u.dtype, device=u.device, memory_format=torch.channels_last)
    g6 = grad.permute(0, 2, 3, 1).view(o, 2, 2, 2, 2, c)  # (o, a, p, b, q, c)
    if m != 2:
        g = (_transforms(m, u.dtype, u.device)[1].t() @ u.reshape((m + 1) ** 2, -1)).view(2, 2, o, 2, 2, c)
        g6.copy_(g.permute(2, 0, 3, 1, 4, 5))
        return grad
    u6 = u.view(3, 3, o, 2, 2, c)
    # Separable: sum the transformed columns j of each kernel column b (j in {b, b+1}), then the rows.
    cols = [[u6[i, b] + u6[i, b + 1] for b in range(2)] for i in range(3)]
    for a in range(2):
        for b in range(2):
            torch.add(cols[a][b], cols[a + 1][b], out=g6[:, a, :, b])
    return grad


def output_transform(mm: torch.Tensor, out: torch.Tensor, m: int = 2) -> torch.Tensor:
    """M ((m+1)^2, T, O) -> AT M A written into ``out`` (N, Ho, Wo, O) (m x m tiles)."""
    n, ho, wo, o = out.shape
    t_out = _transforms(m, mm.dtype, mm.device)[2]
    y = (t_out @ mm.view((m + 1) ** 2, -1)).view(m, m, n, ho // m, wo // m, o)
    out.view(n, ho // m, m, wo // m, m, o).copy_(y.permute(2, 3, 0, 4, 1, 5))
    return out


def output_transform_adjoint(grad: torch.Tensor, m: int = 2) -> torch.Tensor:
    """Adjoint of :func:`output_transform`: (N, Ho, Wo, O) -> ((m+1)^2, T, O)."""
    n, ho, wo, o = grad.shape
    t_out = _transforms(m, grad.dtype, grad.device)[2]
    y = grad.reshape(n, ho // m, m, wo // m, m, o).permute(2, 4, 0, 1, 3, 5).reshape(m * m, -1)
    return (t_out.t() @ y).view((m + 1) ** 2, n * (ho // m) * (wo // m), o)


# --- autograd ---------------------------------------------------------------------------------------------------
def _channels_last_out(like: torch.Tensor, n: int, c: int, h: int, w: int) -> torch.Tensor:
    return torch.empty((n, c, h, w), dtype=like.dtype, device=like.device, memory_format=torch.channels_last)


class Conv2dWinograd(torch.autograd.Function):
    """``F.conv2d(x, weight, stride=2, padding=1)`` for a 4x4 weight, by F(m x m, 2 x 2); NCHW-shaped in and out."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, m: int = 2) -> torch.Tensor:
        n, c, h, w = x.shape
        o = weight.shape[0]
        v = input_transform(x.permute(0, 2, 3, 1), m)
        u = kernel_transform(weight, m)
        out = _channels_last_out(x, n, o, h // 2, w // 2)
        output_transform(torch.bmm(v, u.transpose(1, 2)), out.permute(0, 2, 3, 1), m)
        ctx.save_for_backward(x, weight, v if ctx.needs_input_grad[1] else None, u)
        ctx.m = m
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, v, u = ctx.saved_tensors
        if torch.is_grad_enabled():
            return (*differentiable_conv_grads(grad, x, weight, (2, 2), (1, 1), False, ctx.needs_input_grad[:2]),
                    None)
        n, c, h, w = x.shape
        m = ctx.m
        dm = output_transform_adjoint(grad.permute(0, 2, 3, 1), m)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = input_transform_adjoint(torch.bmm(dm, u), n, h, w, c, m).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            grad_w = kernel_transform_adjoint(torch.bmm(dm.transpose(1, 2), v), c, m)
        return grad_x, grad_w, None


class ConvTranspose2dWinograd(torch.autograd.Function):
    """``F.conv_transpose2d(x, weight, stride=2, padding=1)`` for a 4x4 weight (Cin, Cout, 4, 4), F(m x m, 2 x 2):
    the adjoint of :class:`Conv2dWinograd` with that weight read as a convolution's (Cout=Cin, Cin=Cout)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, m: int = 2) -> torch.Tensor:
        n, _, h, w = x.shape
        c_out = weight.shape[1]
        dm = output_transform_adjoint(x.permute(0, 2, 3, 1), m)
        u = kernel_transform(weight, m)
        full = input_transform_adjoint(torch.bmm(dm, u), n, 2 * h, 2 * w, c_out, m)
        out = _channels_last_out(x, n, c_out, 2 * h, 2 * w)
        out.permute(0, 2, 3, 1).copy_(full)
        ctx.save_for_backward(x, weight, dm if ctx.needs_input_grad[1] else None, u)
        ctx.m = m
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, dm, u = ctx.saved_tensors
        if torch.is_grad_enabled():
            return (*differentiable_conv_grads(grad, x, weight, (2, 2), (1, 1), True, ctx.needs_input_grad[:2]),
                    None)
        n, c_in, h, w = x.shape
        m = ctx.m
        v = input_transform(grad.permute(0, 2, 3, 1), m)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _channels_last_out(x, n, c_in, h, w)
            output_transform(torch.bmm(v, u.transpose(1, 2)), grad_x.permute(0, 2, 3, 1), m)
        if ctx.needs_input_grad[1]:
            grad_w = kernel_transform_adjoint(torch.bmm(dm.transpose(1, 2), v), weight.shape[1], m)
        return grad_x, grad_w, None
