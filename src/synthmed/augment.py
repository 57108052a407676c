"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random, differentiable transforms are applied to real and fake images before the discriminator
(in both the D and G steps), so D cannot memorise a small training set and gradients still reach G.
Works on (N, C, H, W) and (N, C, D, H, W); randomness comes from the global torch RNG on ``x.device``, so
``torch.manual_seed`` makes it reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Augmentation = Callable[[torch.Tensor], torch.Tensor]


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    """One U[0, 1) value per sample, shaped to broadcast over (C, *spatial)."""
    return torch.rand(x.shape[0], *([1] * (x.dim() - 1)), dtype=x.dtype, device=x.device)


def rand_brightness(x: torch.Tensor) -> torch.Tensor:
    """x + U(-0.5, 0.5) per sample."""
    return x + (_per_sample(x) - 0.5)


def rand_saturation(x: torch.Tensor) -> torch.Tensor:
    """Scale each pixel's deviation from its channel mean by U(0, 2); identity for one channel."""
    if x.shape[1] == 1:  # a grey pixel equals its channel mean: nothing to scale (and no RNG draw)
        return x
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_per_sample(x) * 2.0) + mean


def rand_contrast(x: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviation from its mean (over channels and pixels) by U(0.5, 1.5)."""
    mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    return (x - mean) * (_per_sample(x) + 0.5) + mean


def _axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    """arange(x.shape[dim]) shaped to broadcast along ``dim`` of ``x``."""
    size = x.shape[dim]
    return torch.arange(size, device=x.device).view([1] * dim + [size] + [1] * (x.dim() - dim - 1))


def _per_sample_int(x: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """One integer in [low, high) per sample, shaped to broadcast over (C, *spatial)."""
    return torch.randint(low, high, (x.shape[0],), device=x.device).view(-1, *([1] * (x.dim() - 1)))


def rand_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by a random integer in [-size*ratio, size*ratio] per axis, filling with zeros."""
    for dim in range(2, x.dim()):
        size = x.shape[dim]
        shift = int(size * ratio + 0.5)  # rounded as in the reference implementation
        t = _per_sample_int(x, -shift, shift + 1)
        # out[i] = x[i + t], read from a one-pixel zero border: indices past either edge land on the border.
        idx = (_axis(x, dim) + t + 1).clamp(0, size + 1)
        pad = [0, 0] * (x.dim() - dim - 1) + [1, 1]  # F.pad lists the last dimension first
        x = torch.take_along_dim(F.pad(x, pad), idx, dim=dim)
    return x


def rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a (size*ratio)-sided square (cube) at a random centre per image, clipped at the borders."""
    inside = torch.ones((), dtype=torch.bool, device=x.device)
    for dim in range(2, x.dim()):
        size = x.shape[dim]
        cut = int(size * ratio + 0.5)
        # centre range as in the reference implementation (one extra position for even cut sizes)
        lo = _per_sample_int(x, 0, size + (1 - cut % 2)) - cut // 2
        pos = _axis(x, dim)
        inside = inside & (pos >= lo) & (pos < lo + cut)
    return x * (~inside).to(x.dtype)


def random_mirror(x: torch.Tensor) -> torch.Tensor:
    """Mirror each sample along its last axis (left-right) with probability 0.5.

    Not a DiffAugment policy: it is applied to the real images only, as data augmentation (StyleGAN's
    ``--mirror``), so the generator learns the mirrored images as part of the data. Use it where the mirror image
    of a sample is as plausible as the sample itself.
    """
    mirrored = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(mirrored.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


AUGMENTATIONS: dict[str, tuple[Augmentation, ...]] = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"translation, cutout,color"`` -> ``("translation", "cutout", "color")``; ``""`` -> ``()``."""
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        valid = ", ".join(AUGMENTATIONS)
        raise ValueError(f"unknown DiffAugment policy {', '.join(map(repr, unknown))}; valid: {valid}")
    return names


def diff_augment(x: torch.Tensor, policy: str = "translation,cutout,color") -> torch.Tensor:
    """Apply the policy's augmentations in order, each with fresh per-sample randomness.

    "color" = brightness, saturation (skipped for one channel), contrast; "translation" = shift by up to
    1/8 of each side with zero fill; "cutout" = zero a half-side square.
    """
    for name in parse_policy(policy):
        for fn in AUGMENTATIONS[name]:
            x = fn(x)
    return x
