"""First-order convolution gradients that can be differentiated again (WGAN-GP, R1), for the CPU lowerings.

The GEMM and Winograd routes compute their backward without recording a graph. When a graph is wanted
(``create_graph=True``), they hand the gradient to PyTorch's ``convolution_backward``, which autograd can
differentiate a second time; the saved input and weight keep the layer's place in the graph. Unlike recomputing the
forward and differentiating it, this costs no extra forward pass.
"""

from __future__ import annotations

import torch


def differentiable_conv_grads(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                              padding: tuple[int, int], transposed: bool, needs: tuple[bool, bool]
                              ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(d input, d weight) of ``conv2d`` / ``conv_transpose2d`` (no bias, no dilation, one group) with a graph."""
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, list(stride), list(padding), [1, 1], transposed, [0, 0], 1,
        [needs[0], needs[1], False])
    return grad_x, grad_w
