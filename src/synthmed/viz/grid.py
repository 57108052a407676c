"""Sample grids with numpy/PIL (torchvision is not a dependency)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthmed.data import transforms
from synthmed.io import atomic_write


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, rounded as saved images are (one rule in the package:
    :func:`synthmed.data.transforms.to_uint8`)."""
    return transforms.to_uint8(images, channels_last=True)


def make_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, padding: int = 2,
              pad_value: int = 255) -> np.ndarray:
    """Tile images (N, C, H, W) in [-1, 1] into one (H', W', C) uint8 array, ``nrow`` images per row."""
    tiles = to_uint8(images)
    n, h, w, c = tiles.shape
    ncol = nrow or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncol)
    grid = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[y:y + h, x:x + w] = tiles[i]
    return grid


def array_to_image(array: np.ndarray, scale: int = 1) -> Image.Image:
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_grid(path: Path, images: torch.Tensor | np.ndarray, nrow: int | None = None, scale: int = 1) -> Path:
    """Write a sample grid PNG atomically; ``scale`` enlarges small (28 px) images for viewing."""
    img = array_to_image(make_grid(images, nrow=nrow), scale=scale)
    atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG"))
    return Path(path)
