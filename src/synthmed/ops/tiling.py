"""Sliding-window inference of fully convolutional networks on images larger than their training crop.

The pix2pix / CycleGAN generators are trained on crops (e.g. 256 px) and applied to whole scans or fundus
photographs. :func:`sliding_window` runs the network on overlapping ``tile`` x ``tile`` windows and blends them
(as MONAI's ``sliding_window_inference``):

* tile starts per axis come from :func:`tile_starts`: a regular stride ``tile - overlap``, the last tile shifted
  back to end at the image border, so no tile reaches past the image (nothing is padded on large images);
* each tile's output is weighted by the outer product of two 1-D :func:`blend_window` ramps and the result is
  ``sum(w * out) / sum(w)``, which hides the seams left by the zero padding the network sees at tile edges.

Unlike MONAI, a tile side lying on the image border keeps full weight there (its ramp is flat on that side):
nothing is blended at the image border, and every pixel covered by a single tile has weight exactly 1, so it
equals that tile's output bit for bit (with a ramp weight ``w < 1`` the round trip ``(w * x) / w`` changes the
last bit of about one value in seven in float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

BLEND_MODES = ("linear", "cosine", "constant")


def _check_tile(tile: int, overlap: int) -> None:
    if tile < 1:
        raise ValueError(f"tile must be >= 1 (got {tile})")
    if overlap < 0 or overlap >= tile:
        raise ValueError(f"overlap must be in [0, tile) (got overlap={overlap}, tile={tile})")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``[0, length)`` with consecutive tiles overlapping by ``overlap`` px or more.

    The starts step by ``tile - overlap``; the last tile is shifted back so that it ends exactly at ``length``
    (so it overlaps its neighbour by more), never padded past the image. One start ``[0]`` when
    ``length <= tile`` (the caller pads that side up to ``tile``).

    Args:
        length: Image side in pixels (>= 1).
        tile: Tile side in pixels (>= 1).
        overlap: Minimum overlap of consecutive tiles in pixels, ``0 <= overlap < tile``.

    Raises:
        ValueError: ``overlap`` negative or not smaller than ``tile``, or ``length`` < 1.
    """
    _check_tile(tile, overlap)
    if length < 1:
        raise ValueError(f"length must be >= 1 (got {length})")
    if length <= tile:
        return [0]
    # range() stops before length - tile, so the shifted last start is never duplicated.
    return [*range(0, length - tile, tile - overlap), length - tile]


def _window(tile: int, overlap: int, mode: str, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D float64 weights with the ramps only at the ends asked for (an end on the image border stays flat)."""
    if mode not in BLEND_MODES:
        raise ValueError(f"mode must be one of {', '.join(BLEND_MODES)} (got {mode!r})")
    _check_tile(tile, overlap)
    # Ramps stop at the middle, so that the middle reaches 1 even when overlap is more than half the tile.
    ramp = min(overlap, (tile - 1) // 2)
    weights = torch.ones(tile, dtype=torch.float64)
    if mode == "constant" or ramp == 0:
        return weights
    # (i + 1) / (ramp + 1): the outermost pixel keeps weight 1 / (ramp + 1) > 0, the first flat one has 1.
    up = torch.arange(1, ramp + 1, dtype=torch.float64) / (ramp + 1)
    if mode == "cosine":
        up = 0.5 - 0.5 * torch.cos(math.pi * up)
    if ramp_start:
        weights[:ramp] = up
    if ramp_end:
        weights[tile - ramp:] = up.flip(0)
    return weights


def blend_window(tile: int, overlap: int, mode: str = "linear") -> torch.Tensor:
    """1-D blending weights (tile,): 1 in the middle, ramping down over ``overlap`` px at each end.

    The ramp value of the ``i``-th pixel from an end (0-based) is ``r = (i + 1) / (overlap + 1)``, never exactly
    0, so an image-border pixel covered by one tile still gets weight. When ``overlap`` is more than half the
    tile, the ramps are shortened to ``(tile - 1) // 2`` px so that the middle still reaches 1.

    Args:
        tile: Tile side in pixels.
        overlap: Ramp length in pixels, ``0 <= overlap < tile`` (0: all ones).
        mode: ``"linear"`` (weight ``r``), ``"cosine"`` (raised cosine ``(1 - cos(pi r)) / 2``) or
            ``"constant"`` (all ones: plain averaging of overlapping tiles).

    Returns:
        float32 tensor (tile,), symmetric, in (0, 1].
    """
    return _window(tile, overlap, mode, ramp_start=True, ramp_end=True).float()


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_bottom_right(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom and right up to (height, width) by reflection (repeated when needed)."""
    while image.shape[-2] < height or image.shape[-1] < width:
        h, w = image.shape[-2:]
        # Reflection needs pad < side; sides of 1 px cannot be reflected and are replicated instead.
        pad_h = min(height - h, h - 1) if h > 1 else height - h
        pad_w = min(width - w, w - 1) if w > 1 else width - w
        pad_h, pad_w = max(pad_h, 0), max(pad_w, 0)
        mode = "replicate" if (pad_h and h == 1) or (pad_w and w == 1) else "reflect"
        image = F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
    return image


def _check_output(out: torch.Tensor, batch: torch.Tensor) -> None:
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != batch.shape[0] \
            or out.shape[-2:] != batch.shape[-2:]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"fn must map (N, C, h, w) to (N, C', h, w): got {got} for input {tuple(batch.shape)}")


def _axis_windows(length: int, starts: list[int], tile: int, overlap: int, mode: str) -> list[torch.Tensor]:
    """One 1-D window per start, flat on the sides that lie on the image border."""
    return [_window(tile, overlap, mode, ramp_start=s > 0, ramp_end=s + tile < length) for s in starts]


@torch.no_grad()
def sliding_window(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int,
    overlap: int,
    *,
    multiple: int = 1,
    batch_size: int = 4,
    mode: str = "linear",
) -> torch.Tensor:
    """Apply ``fn`` to an image batch tile by tile and blend the tiles' outputs.

    * If ``H <= tile`` and ``W <= tile``: one call ``fn(image)``; the image is reflect-padded at the bottom and
      right up to a multiple of ``multiple`` when needed (U-Nets need sides divisible by 2^depth) and the
      output cropped back, so without padding the result is exactly ``fn(image)``.
    * Otherwise ``tile`` x ``tile`` tiles at the :func:`tile_starts` offsets of each axis (an image side smaller
      than ``tile`` is reflect-padded up to ``tile`` and cropped back), blended as ``sum(w * out) / sum(w)``,
      ``w`` the outer product of the two axes' :func:`blend_window` (flat on sides lying on the image border).
      A pixel covered by a single tile equals that tile's output exactly.

    Args:
        fn: Fully convolutional map (n, C, h, w) -> (n, C', h, w) returning floating-point tensors (the
            generator's forward); called under ``torch.no_grad()``.
        image: (N, C, H, W) batch; tiles keep its device and dtype.
        tile: Tile side in pixels (the training crop); a multiple of ``multiple`` when tiling.
        overlap: Minimum overlap of neighbouring tiles in pixels, ``0 <= overlap < tile``; also the blending ramp.
        multiple: Side multiple ``fn`` needs (e.g. 8 for three stride-2 downsamplings).
        batch_size: Tiles per call of ``fn`` (tiles of all N images are batched together).
        mode: Blending ramp: ``"linear"``, ``"cosine"`` or ``"constant"`` (plain averaging).

    Returns:
        (N, C', H, W) tensor with the dtype of ``fn``'s output.

    Raises:
        ValueError: bad shapes or arguments, ``tile`` not a multiple of ``multiple`` when tiling, or ``fn``
            changing the batch or spatial size.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (N, C, H, W), got shape {tuple(image.shape)}")
    if multiple < 1 or batch_size < 1:
        raise ValueError(f"multiple and batch_size must be >= 1 (got {multiple} and {batch_size})")
    _window(tile, overlap, mode, ramp_start=True, ramp_end=True)  # validates tile, overlap and mode
    n, _, height, width = image.shape
    if height <= tile and width <= tile:
        padded = pad_bottom_right(image, _round_up(height, multiple), _round_up(width, multiple))
        out = fn(padded)
        _check_output(out, padded)
        return out[..., :height, :width]
    if tile % multiple:
        raise ValueError(f"tile {tile} must be a multiple of multiple={multiple}")
    padded = pad_bottom_right(image, max(height, tile), max(width, tile))
    ph, pw = padded.shape[-2:]
    ys, xs = tile_starts(ph, tile, overlap), tile_starts(pw, tile, overlap)
    wys, wxs = _axis_windows(ph, ys, tile, overlap, mode), _axis_windows(pw, xs, tile, overlap, mode)
    jobs = [(b, iy, ix) for b in range(n) for iy in range(len(ys)) for ix in range(len(xs))]

    total: torch.Tensor | None = None
    out_dtype = image.dtype
    for first in range(0, len(jobs), batch_size):
        chunk = jobs[first:first + batch_size]
        batch = torch.stack([padded[b, :, ys[iy]:ys[iy] + tile, xs[ix]:xs[ix] + tile] for b, iy, ix in chunk])
        out = fn(batch)
        _check_output(out, batch)
        if total is None:
            out_dtype = out.dtype
            # Accumulate in at least float32: half-precision sums of many tiles lose digits.
            acc_dtype = torch.promote_types(out.dtype, torch.float32)
            total = torch.zeros((n, out.shape[1], ph, pw), dtype=acc_dtype, device=out.device)
        for k, (b, iy, ix) in enumerate(chunk):
            w = torch.outer(wys[iy], wxs[ix]).to(device=total.device, dtype=total.dtype)
            total[b, :, ys[iy]:ys[iy] + tile, xs[ix]:xs[ix] + tile] += w * out[k].to(total.dtype)
    assert total is not None  # at least one tile

    # The weight sum is the same for every image: built once per tile position, not per image.
    weight_sum = torch.zeros((ph, pw), dtype=total.dtype, device=total.device)
    for iy, y in enumerate(ys):
        for ix, x in enumerate(xs):
            weight_sum[y:y + tile, x:x + tile] += torch.outer(wys[iy], wxs[ix]).to(weight_sum)
    return (total / weight_sum)[..., :height, :width].to(out_dtype)


__all__ = ["BLEND_MODES", "blend_window", "sliding_window", "tile_starts"]
