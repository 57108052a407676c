"""SNGAN / BigGAN-style residual generator and discriminator (Miyato et al. 2018; Brock et al. 2019)."""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.nn.layers import add_spectral_norm, avg_pool_cls, batch_norm_cls, conv_cls, resolve_image_size

MAX_MULTIPLIER = 16  # widest stage is base * 16, as in SNGAN's 64 and 128 px models


def _init_block_convs(*convs: nn.Module, gain: float) -> None:
    # SNGAN initialisation: Glorot uniform, gain sqrt(2) on residual convs (ReLU) and 1 on shortcuts/linears.
    for conv in convs:
        nn.init.xavier_uniform_(conv.weight, gain)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)


class GeneratorBlock(nn.Module):
    """BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, plus an upsampled 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        conv, bn = conv_cls(spatial_dims), batch_norm_cls(spatial_dims)
        self.bn1, self.bn2 = bn(in_channels), bn(out_channels)
        self.conv1 = conv(in_channels, out_channels, 3, 1, 1)
        self.conv2 = conv(out_channels, out_channels, 3, 1, 1)
        self.shortcut = conv(in_channels, out_channels, 1, 1, 0)
        _init_block_convs(self.conv1, self.conv2, gain=math.sqrt(2))
        _init_block_convs(self.shortcut, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DiscriminatorBlock(nn.Module):
    """ReLU-conv3x3-ReLU-conv3x3[-avgpool] plus a 1x1-conv[-avgpool] shortcut (identity when it can be).

    ``first=True`` is SNGAN's "optimized" first block: no ReLU on the raw image, and the shortcut pools
    before its 1x1 conv (cheaper, same function class).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        downsample: bool = True,
        first: bool = False,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        conv = conv_cls(spatial_dims)
        self.first = first
        self.conv1 = conv(in_channels, out_channels, 3, 1, 1)
        self.conv2 = conv(out_channels, out_channels, 3, 1, 1)
        self.pool = avg_pool_cls(spatial_dims)(2) if downsample else nn.Identity()
        learnable = first or downsample or in_channels != out_channels
        self.shortcut = conv(in_channels, out_channels, 1, 1, 0) if learnable else nn.Identity()
        _init_block_convs(self.conv1, self.conv2, gain=math.sqrt(2))
        if learnable:
            _init_block_convs(self.shortcut, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.pool(self.conv2(F.relu(self.conv1(h))))
        sc = self.shortcut(self.pool(x)) if self.first else self.pool(self.shortcut(x))
        return h + sc


def _stage_channels(base_channels: int, doublings: int) -> list[int]:
    """Coarsest to finest: base * min(2**k, 16) for k = doublings..0 (64 px: 16, 8, 4, 2, 1 x base)."""
    return [base_channels * min(2**k, MAX_MULTIPLIER) for k in range(doublings, -1, -1)]


class ResNetGenerator(nn.Module):
    """z (N, latent_dim) -> Linear -> bottom^d map (4, or 7 for 28 px) -> residual up-blocks ->
    BN-ReLU-conv3x3-tanh. Channels: base * min(2**k, 16), so 64 px is SNGAN's 16, 8, 4, 2, 1 x base.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        out_channels: int = 1,
        image_size: int = 64,
        base_channels: int = 64,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        bottom, doublings = resolve_image_size(image_size)
        self.latent_dim, self.image_size, self.spatial_dims = latent_dim, image_size, spatial_dims
        chans = _stage_channels(base_channels, doublings)
        self._bottom_shape = (chans[0],) + (bottom,) * spatial_dims
        self.linear = nn.Linear(latent_dim, math.prod(self._bottom_shape))
        self.blocks = nn.Sequential(*(GeneratorBlock(a, b, spatial_dims) for a, b in pairwise(chans)))
        self.bn = batch_norm_cls(spatial_dims)(chans[-1])
        self.conv_out = conv_cls(spatial_dims)(chans[-1], out_channels, 3, 1, 1)
        _init_block_convs(self.linear, self.conv_out, gain=1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.linear(z.reshape(z.shape[0], self.latent_dim)).view(z.shape[0], *self._bottom_shape)
        return torch.tanh(self.conv_out(F.relu(self.bn(self.blocks(h)))))


class ResNetDiscriminator(nn.Module):
    """Image -> logit (N,): optimized block, residual down-blocks to bottom^d, one block at bottom^d,
    ReLU, global sum pooling, linear. Spectral norm on every conv and linear by default (SNGAN).

    Channels mirror the generator (base, 2 base, ... up to 16 base). 128 px matches SNGAN's 128 px model.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 64,
        base_channels: int = 64,
        spectral_norm: bool = True,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        _, doublings = resolve_image_size(image_size)
        self.image_size, self.spatial_dims = image_size, spatial_dims
        self._spatial = tuple(range(2, 2 + spatial_dims))
        chans = _stage_channels(base_channels, doublings)[::-1]  # finest first, ends at 16 base
        blocks = [DiscriminatorBlock(in_channels, chans[0], first=True, spatial_dims=spatial_dims)]
        for i, (c_in, c_out) in enumerate(pairwise(chans)):
            # downsample doublings times in all (first block included); the last block keeps bottom^d
            down = i < doublings - 1
            blocks.append(DiscriminatorBlock(c_in, c_out, downsample=down, spatial_dims=spatial_dims))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = chans[-1]
        self.linear = nn.Linear(chans[-1], 1)
        _init_block_convs(self.linear, gain=1.0)
        if spectral_norm:
            add_spectral_norm(self)

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (N,); with ``return_features`` also the pooled features (N, num_features)."""
        feats = F.relu(self.blocks(x)).sum(dim=self._spatial)  # global sum pooling (SNGAN)
        logits = self.linear(feats).reshape(-1)
        return (logits, feats) if return_features else logits
