"""Small factories that pick 2-D or 3-D layers by ``spatial_dims`` (MONAI style), plus size bookkeeping."""

from __future__ import annotations

import math

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from synthmed.ops import cpu_conv

NORMS = ("batch", "instance", "layer", "none")


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def conv_cls(spatial_dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    """``nn.Conv2d`` (its CPU-lowering subclass, :mod:`synthmed.ops.cpu_conv`) or ``nn.Conv3d``."""
    return cpu_conv.Conv2d if _check_dims(spatial_dims) == 2 else nn.Conv3d


def conv_transpose_cls(spatial_dims: int) -> type[nn.ConvTranspose2d] | type[nn.ConvTranspose3d]:
    """``nn.ConvTranspose2d`` (its CPU-lowering subclass) or ``nn.ConvTranspose3d``."""
    return cpu_conv.ConvTranspose2d if _check_dims(spatial_dims) == 2 else nn.ConvTranspose3d


def batch_norm_cls(spatial_dims: int) -> type[nn.BatchNorm2d] | type[nn.BatchNorm3d]:
    """``nn.BatchNorm2d`` or ``nn.BatchNorm3d``."""
    return nn.BatchNorm2d if _check_dims(spatial_dims) == 2 else nn.BatchNorm3d


def instance_norm_cls(spatial_dims: int) -> type[nn.InstanceNorm2d] | type[nn.InstanceNorm3d]:
    """``nn.InstanceNorm2d`` or ``nn.InstanceNorm3d``."""
    return nn.InstanceNorm2d if _check_dims(spatial_dims) == 2 else nn.InstanceNorm3d


def avg_pool_cls(spatial_dims: int) -> type[nn.AvgPool2d] | type[nn.AvgPool3d]:
    """``nn.AvgPool2d`` or ``nn.AvgPool3d``."""
    return nn.AvgPool2d if _check_dims(spatial_dims) == 2 else nn.AvgPool3d


def check_norm(norm: str) -> str:
    """Validate a normalisation name (one of :data:`NORMS`)."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    return norm


def make_norm(norm: str, channels: int, spatial_dims: int) -> nn.Module:
    """A normalisation layer for ``channels`` feature maps; ``"layer"`` is ``GroupNorm(1, C)``.

    Why GroupNorm(1, C) for "layer": it normalises each sample over (C, *spatial) with a per-channel affine,
    which is the layer norm of the WGAN-GP critic and, unlike BatchNorm, keeps samples independent
    (the gradient penalty is defined per sample).
    """
    check_norm(norm)
    if norm == "batch":
        return batch_norm_cls(spatial_dims)(channels)
    if norm == "instance":
        return instance_norm_cls(spatial_dims)(channels, affine=True)
    if norm == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def add_spectral_norm(module: nn.Module) -> nn.Module:
    """Put spectral normalisation (Miyato et al. 2018) on every conv and linear weight of ``module``.

    In place. Call it after weight initialisation: the power-iteration vectors are seeded from the
    weights as they are then.
    """
    for m in list(module.modules()):
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            spectral_norm(m)
    return module


def resolve_image_size(image_size: int) -> tuple[int, int]:
    """Split ``image_size`` into ``(bottom, doublings)`` with ``image_size == bottom * 2**doublings``.

    ``bottom`` is 4 for powers of two (16, 32, 64, 128, ...) and 7 for 7 * 2**k (28, 56, 112, ...), the
    MedMNIST 28 px layout 7 -> 14 -> 28. At least two doublings keep one hidden up/down-sampling stage.
    """
    for bottom in (4, 7):
        if not isinstance(image_size, int):
            break
        ratio = image_size // bottom
        if image_size == bottom * ratio and ratio >= 4 and ratio & (ratio - 1) == 0:
            return bottom, int(math.log2(ratio))
    raise ValueError(
        f"image_size must be a power of two >= 16 (16, 32, 64, 128, ...) or 7 * a power of two >= 28 "
        f"(28, 56, 112, ...), got {image_size!r}"
    )
