"""Segmentation networks: the U-Net segmentor shared by every segmentation recipe and SegAN's multi-scale critic.

The segmentor is the pix2pix U-Net (:class:`~synthmed.nn.translation.UNetGenerator`: 4x4 stride-2 encoder,
transposed-conv decoder, skip connections) without dropout and with raw logits out, at a depth chosen for
segmentation (a 4x4 bottleneck at 128 px rather than pix2pix's 1x1), so that the plain U-Net baseline, SegAN and
pix2pix-style segmentation differ only in their losses.

SegAN's critic (Xue et al. 2018, "SegAN: Adversarial Network with Multi-scale L1 Loss for Medical Image
Segmentation", Neuroinformatics 16) has the segmentor's encoder layout: 4x4 stride-2 convolutions, batch norm after
all but the first, LeakyReLU 0.2. It returns the features of every layer together with its input (the masked
image itself), the hierarchy the multi-scale L1 loss compares.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from synthmed.errors import ConfigError
from synthmed.nn.layers import check_norm, conv_cls, make_norm
from synthmed.nn.translation import UNetGenerator, init_translation_weights

__all__ = ["SegANCritic", "build_segmentor", "segmentation_depth"]

#: The largest U-Net depth used by default: 5 downsamplings (a 4x4 bottleneck at 128 px, 16x16 at 512).
DEFAULT_MAX_DEPTH = 5


def segmentation_depth(image_size: int, max_depth: int = DEFAULT_MAX_DEPTH) -> int:
    """Default segmentor depth: ``max_depth`` downsamplings, fewer when the image is small (bottleneck >= 2 px).

    Args:
        image_size: side of the training images (or crops), >= 8.
        max_depth: the most downsamplings to use.
    """
    if image_size < 8:
        raise ConfigError(f"segmentation needs images (or crops) of at least 8 px, got {image_size}")
    return max(1, min(max_depth, int(math.log2(image_size)) - 1))


def build_segmentor(in_channels: int, out_channels: int, *, depth: int, base_channels: int = 32,
                    norm: str = "batch", spatial_dims: int = 2) -> UNetGenerator:
    """The U-Net segmentor: logits (``out_channels``: 1 for a binary mask, K for K classes), no dropout.

    Args:
        in_channels: image channels.
        out_channels: 1 (binary: foreground logit) or the number of classes (softmax logits).
        depth: number of 2x downsamplings; inputs must be multiples of ``2**depth``.
        base_channels: feature maps of the outermost level (doubling per level, capped at 8x).
        norm: ``"batch"``, ``"instance"``, ``"layer"`` or ``"none"``.
        spatial_dims: 2 for images, 3 for volumes.
    """
    return UNetGenerator(in_channels, out_channels, depth=depth, base_channels=base_channels, norm=norm,
                         dropout=0.0, spatial_dims=spatial_dims, out_activation="none")


class SegANCritic(nn.Module):
    """SegAN's critic: a convolutional encoder whose every layer's output is a feature scale.

    ``forward(x)`` returns ``[x, f_1, ..., f_L]``: the (masked) input and the output of each of the ``depth``
    blocks (conv 4x4 s2, norm except on the first block, LeakyReLU 0.2). The multi-scale L1 loss
    (:func:`synthmed.losses.multiscale_l1_loss`) compares these lists for ``image * prediction`` and
    ``image * truth``. There is no final score: the critic is trained to maximise that distance.

    Args:
        in_channels: channels of the masked input (image channels x masked classes).
        depth: number of blocks (feature scales besides the input).
        base_channels: feature maps of the first block (doubling per block, capped at 8x).
        norm: normalisation of blocks 2..depth (batch in the paper's code).
        spatial_dims: 2 for images, 3 for volumes.
    """

    def __init__(self, in_channels: int, depth: int = 5, base_channels: int = 32, norm: str = "batch",
                 spatial_dims: int = 2) -> None:
        super().__init__()
        check_norm(norm)
        if depth < 1:
            raise ValueError(f"SegANCritic depth must be >= 1, got {depth!r}")
        conv = conv_cls(spatial_dims)
        chans = [base_channels * min(2**i, 8) for i in range(depth)]
        blocks = []
        for i, out in enumerate(chans):
            layers: list[nn.Module] = [conv(in_channels if i == 0 else chans[i - 1], out, 4, 2, 1,
                                            bias=i == 0 or norm != "batch")]
            if i > 0:
                layers.append(make_norm(norm, out, spatial_dims))
            layers.append(nn.LeakyReLU(0.2))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.multiple = 2**depth
        init_translation_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        for block in self.blocks:
            features.append(block(features[-1]))
        return features
