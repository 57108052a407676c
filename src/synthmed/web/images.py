"""Images as the web app sends them: PNG bytes with no metadata, from arrays or tensors in [-1, 1]."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from synthmed.viz.grid import to_uint8


def png_bytes(image: np.ndarray | torch.Tensor, scale: int = 1, compress_level: int | None = None) -> bytes:
    """One image as PNG bytes: a (C, H, W) tensor/array in [-1, 1], or an (H, W[, C]) uint8 array.

    ``scale`` enlarges by pixel repetition (nearest), so small images stay sharp in the browser. Nothing but
    pixels is written: no text chunks, no file name, no time.

    Args:
        image: The image.
        scale: Whole-number enlargement.
        compress_level: zlib level 0 (stored, no compression) to 9; None keeps PIL's default. Level 0 makes the
            byte length depend on size and mode alone, not on the pixels (the Turing test relies on that).
    """
    if isinstance(image, torch.Tensor) or image.dtype != np.uint8:
        array = to_uint8(torch.as_tensor(np.asarray(image))[None])[0]
    else:
        array = image
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if scale > 1:
        array = array.repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    options = {} if compress_level is None else {"compress_level": compress_level}
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", **options)
    return buffer.getvalue()
