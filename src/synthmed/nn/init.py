"""Weight initialisation of Radford et al. (2016), as in the PyTorch DCGAN tutorial."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def _weight(module: nn.Module) -> torch.Tensor | None:
    # Under spectral norm (a parametrisation) ``module.weight`` is recomputed on access, so write the
    # stored original instead.
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return getattr(module, "weight", None)


@torch.no_grad()
def init_dcgan_weights(module: nn.Module) -> None:
    """Conv weights ~ N(0, 0.02), norm weights ~ N(1, 0.02), their biases 0, for ``module`` and descendants.

    Works both as ``init_dcgan_weights(model)`` and as ``model.apply(init_dcgan_weights)``. Other layers
    (e.g. Linear, minibatch discrimination) keep their own initialisation.
    """
    for m in module.modules():
        is_conv, is_norm = isinstance(m, _CONVS), isinstance(m, _NORMS)
        if not (is_conv or is_norm):
            continue
        weight = _weight(m)
        if weight is not None:
            nn.init.normal_(weight, 1.0 if is_norm else 0.0, 0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
