"""DCGAN generator and discriminator (Radford et al. 2016; layout of the PyTorch DCGAN tutorial)."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from synthmed.nn.init import init_dcgan_weights
from synthmed.nn.layers import (
    add_spectral_norm,
    batch_norm_cls,
    check_norm,
    conv_cls,
    conv_transpose_cls,
    make_norm,
    resolve_image_size,
)
from synthmed.nn.minibatch import MinibatchDiscrimination, MinibatchStdDev


def _channels(base_channels: int, doublings: int, max_multiplier: int) -> list[int]:
    """Feature maps from the coarsest hidden resolution to the finest: base * min(2**k, max), k = n-1..0."""
    return [base_channels * min(2**k, max_multiplier) for k in range(doublings - 1, -1, -1)]


class DCGANGenerator(nn.Module):
    """z (N, latent_dim) -> image (N, out_channels, S, S[, S]) in [-1, 1] by transposed convolutions only.

    1x1 -> ConvT(k=bottom, s=1, p=0) -> bottom^d (4, or 7 for 28 px) -> [ConvT(4, 2, 1) + BN + ReLU] x n ->
    ConvT(4, 2, 1) -> tanh. 64 px at base 64 gives the tutorial's 512, 256, 128, 64 feature maps.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        out_channels: int = 1,
        image_size: int = 64,
        base_channels: int = 64,
        spatial_dims: int = 2,
        max_multiplier: int = 8,
    ) -> None:
        super().__init__()
        bottom, doublings = resolve_image_size(image_size)
        self.latent_dim, self.image_size, self.spatial_dims = latent_dim, image_size, spatial_dims
        self._latent_shape = (latent_dim,) + (1,) * spatial_dims
        convt, bn = conv_transpose_cls(spatial_dims), batch_norm_cls(spatial_dims)
        chans = _channels(base_channels, doublings, max_multiplier)
        # No conv biases: BatchNorm's shift makes them redundant (and the tutorial has none).
        layers: list[nn.Module] = [convt(latent_dim, chans[0], bottom, 1, 0, bias=False)]
        layers += [bn(chans[0]), nn.ReLU(True)]
        for c_in, c_out in pairwise(chans):
            layers += [convt(c_in, c_out, 4, 2, 1, bias=False), bn(c_out), nn.ReLU(True)]
        layers += [convt(chans[-1], out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], *self._latent_shape))


class DCGANDiscriminator(nn.Module):
    """Image -> real/fake logit (N,) by strided convolutions only.

    Conv(4, 2, 1) + LeakyReLU(0.2) -> [Conv(4, 2, 1) + norm + LeakyReLU(0.2)] down to bottom^d (4, or 7 for
    28 px) -> Conv(k=bottom, s=1, p=0) to one logit. ``norm="layer"`` or ``"none"`` for a WGAN-GP critic.
    With ``minibatch_discrimination`` the last conv becomes :class:`MinibatchDiscrimination` + Linear; with
    ``minibatch_std`` (a group size; 0: off) :class:`MinibatchStdDev` appends a map of the spread of each sample's
    group to the bottom^d maps before the last conv, which then reads one more channel (ProGAN puts the layer
    before its last block). ``return_features`` gives the maps before either layer, so ``num_features`` does not
    change. Logits, no sigmoid: the losses use the numerically stable ``*_with_logits`` forms. Convs carry a
    bias only with ``norm="none"``; with batch norm the layout is the tutorial's, parameter for parameter.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 64,
        base_channels: int = 64,
        norm: str = "batch",
        spectral_norm: bool = False,
        minibatch_discrimination: bool = False,
        spatial_dims: int = 2,
        max_multiplier: int = 8,
        minibatch_std: int = 0,
    ) -> None:
        super().__init__()
        bottom, doublings = resolve_image_size(image_size)
        check_norm(norm)
        if minibatch_std < 0 or minibatch_std == 1:
            raise ValueError(f"minibatch_std is 0 (off) or a group of at least 2 samples (got {minibatch_std})")
        if minibatch_std and minibatch_discrimination:
            raise ValueError("minibatch_std and minibatch_discrimination do not combine; choose one")
        self.image_size, self.spatial_dims = image_size, spatial_dims
        conv = conv_cls(spatial_dims)
        bias = norm == "none"  # a norm's affine shift makes a conv bias redundant (the tutorial has none)
        chans = _channels(base_channels, doublings, max_multiplier)[::-1]  # finest first

        layers = [conv(in_channels, chans[0], 4, 2, 1, bias=bias), nn.LeakyReLU(0.2, True)]  # no norm here
        for c_in, c_out in pairwise(chans):
            layers += [conv(c_in, c_out, 4, 2, 1, bias=bias), make_norm(norm, c_out, spatial_dims)]
            layers += [nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.num_features = chans[-1] * bottom**spatial_dims
        self.minibatch_std = MinibatchStdDev(minibatch_std) if minibatch_std else None
        if minibatch_discrimination:
            self.minibatch = MinibatchDiscrimination(self.num_features)
            self.head: nn.Module = nn.Linear(self.minibatch.out_features, 1)
        else:
            self.minibatch = None
            self.head = conv(chans[-1] + (1 if minibatch_std else 0), 1, bottom, 1, 0, bias=bias)
        init_dcgan_weights(self)
        if spectral_norm:
            add_spectral_norm(self)

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (N,); with ``return_features`` also the flattened last hidden features (N, num_features)."""
        h = self.features(x)
        feats = h.flatten(1)
        if self.minibatch is not None:
            logits = self.head(self.minibatch(feats))
        else:
            logits = self.head(self.minibatch_std(h) if self.minibatch_std is not None else h)
        logits = logits.reshape(-1)
        return (logits, feats) if return_features else logits
