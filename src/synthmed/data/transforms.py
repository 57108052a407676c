"""Array transforms shared by every source (numpy / PIL / torch only, no torchvision).

Conventions: images are (N, C, H, W) (or (C, H, W) where noted); model-space values are float32 in [-1, 1].
Masks are resized with nearest neighbour so they stay binary (or, label maps, keep their class indices).

Mask values (the data option ``mask_values``, :data:`MASK_VALUES`): ``"binary"`` masks become {0, 1} by
:func:`mask_threshold`; ``"labels"`` masks are label maps whose whole values 0, 1, 2, ... are class indices
(0 = background), checked by :func:`label_problem`. :func:`label_map_levels` recognises a label map read as
binary: whole values ``>= 0``, all below :data:`LABEL_MAP_LIMIT`, more than two of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synthmed.errors import ConfigError

__all__ = [
    "LABEL_MAP_LIMIT",
    "MASK_VALUES",
    "center_crop_square",
    "check_mask_values",
    "fit_mask",
    "fit_square",
    "label_map_levels",
    "label_map_message",
    "label_problem",
    "mask_threshold",
    "normalize",
    "pad_to",
    "parse_channels",
    "preprocess_images",
    "preprocess_masks",
    "resize",
    "to_uint8",
    "uint16_range",
    "value_range",
]

# Images converted to float at once; bounds peak memory for large npz files (e.g. 3350 x 3 x 128 x 128).
CHUNK = 256

MASK_VALUES = ("binary", "labels")  # how mask values are read: {0, 1} foreground, or class indices
# Binary mode: whole values >= 0 all below this, more than two of them, are a label map, not a grey-level
# mask. 0/255 masks, JPEG noise around them and anti-aliased edges all reach far above it; 1..31 are labels.
LABEL_MAP_LIMIT = 32
_LEVEL_ELEMENTS = 1 << 22  # mask values counted at once (bincount widens them to int64)


def value_range(
    array: np.ndarray, *, peak: float | None = None, source: str | None = None
) -> tuple[float, float]:
    """The range that maps to [-1, 1]: the dtype's range for integers of 8/16 bit, the data's otherwise.

    Why the dtype and not the data: a dark uint8 image must stay dark, so its own min/max must not
    stretch it. Float data already in [0, 1] or [-1, 1] keep that range; other floats and wide integer
    types (e.g. CT in Hounsfield units as int16) use the array's min/max.
    uint16 data whose maximum over the whole data set (``array``, or ``peak`` when the caller computed it
    over more than ``array``) is below a quarter of 65535 is 10/12/14-bit data in a 16-bit container: it is
    scaled by that maximum instead (see :func:`uint16_range`), with a warning naming ``source``.
    """
    if array.dtype == np.bool_:
        return 0.0, 1.0
    if array.dtype == np.uint8:
        return 0.0, 255.0
    if array.dtype == np.uint16:
        if peak is None:
            peak = float(np.max(array)) if array.size else 0.0
        return uint16_range(peak, source)
    if array.size == 0:
        return 0.0, 1.0
    lo, hi = float(np.min(array)), float(np.max(array))
    if np.issubdtype(array.dtype, np.floating):
        if lo >= 0.0 and hi <= 1.0:
            return 0.0, 1.0
        if lo >= -1.0 and hi <= 1.0:
            return -1.0, 1.0
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


# uint16 data whose whole-set maximum is below this use fewer bits (e.g. 12-bit CT / MR / X-ray: 0..4095).
LOW_BIT_UINT16 = 65535 / 4


def uint16_range(peak: float, source: str | None = None) -> tuple[float, float]:
    """Range for uint16 data with maximum ``peak`` over the whole data set: (0, 65535), or (0, peak) with a
    warning when ``peak`` < 65535 / 4 (12-bit data would otherwise land in [-1, -0.875])."""
    if 0 < peak < LOW_BIT_UINT16:
        bits = int(np.ceil(np.log2(peak + 1)))
        warnings.warn(
            f"{source or 'data'}: uint16 values only reach {peak:g} (about {bits}-bit data); scaled by 0..{peak:g} "
            "(the maximum over the whole data set) instead of 0..65535",
            stacklevel=3,
        )
        return 0.0, float(peak)
    return 0.0, 65535.0


def normalize(array: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Map ``value_range`` linearly onto [-1, 1] (float32, clipped)."""
    lo, hi = value_range
    scale = 2.0 / (hi - lo) if hi > lo else 1.0
    out = (array.astype(np.float32, copy=False) - np.float32(lo)) * np.float32(scale) - np.float32(1.0)
    return np.clip(out, -1.0, 1.0, out=out)


def center_crop_square(images: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Crop the largest centred square from (..., H, W)."""
    h, w = images.shape[-2], images.shape[-1]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return images[..., top : top + side, left : left + side]


def resize(images: torch.Tensor, size: int, *, mask: bool = False) -> torch.Tensor:
    """Resize square (N, C, H, W) float images to ``size``.

    Downsampling uses antialiased bilinear (an area-like filter, so fine texture does not alias);
    upsampling plain bilinear; masks nearest, so they stay in {0, 1}.
    """
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    if mask:
        return F.interpolate(images, size=(size, size), mode="nearest-exact")
    down = size < min(h, w)
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=down)
    return out.clamp_(-1.0, 1.0)


def fit_square(image: np.ndarray, size: int | None) -> np.ndarray:
    """Centre-crop one float (C, H, W) image in [-1, 1] and resize it to ``size`` (``None``: crop only).

    Readers of many files call this per image, so big folders never sit in memory at full resolution.
    """
    x = torch.from_numpy(np.ascontiguousarray(center_crop_square(image), dtype=np.float32))
    return x.numpy() if size is None else resize(x[None], size)[0].numpy()


def fit_mask(mask: np.ndarray, size: int | None) -> np.ndarray:
    """Centre-crop one (H, W) mask of any dtype and resize it to ``size`` by nearest neighbour (torch's
    ``nearest-exact``), keeping its values and dtype: binarise afterwards with :func:`mask_threshold`."""
    mask = center_crop_square(mask)
    if size is None or mask.shape[-1] == size:
        return np.ascontiguousarray(mask)
    index = _nearest_index(mask.shape[-1], size)
    return mask[index][:, index]


def preprocess_images(
    images: np.ndarray,
    value_range: tuple[float, float] | None,
    size: int | None,
    *,
    channels_last: bool = False,
    rows: np.ndarray | None = None,
    channels: Sequence[int] | None = None,
) -> torch.Tensor:
    """Native (N, C, H, W) (or (N, H, W, C)) array -> float32 tensor (N', C', size, size) in [-1, 1].

    ``rows`` / ``channels`` select samples and channels chunk by chunk (:data:`CHUNK` images at a time), so
    a large uint8 file is neither copied whole nor held as float all at once.
    ``value_range=None`` means the values are already in [-1, 1].
    """
    n = images.shape[0] if rows is None else len(rows)
    c = (images.shape[-1] if channels_last else images.shape[1]) if channels is None else len(channels)
    h, w = images.shape[1:3] if channels_last else images.shape[2:4]
    side = size or min(h, w)
    out = torch.empty((n, c, side, side), dtype=torch.float32)
    for start in range(0, n, CHUNK):
        chunk = images[start : start + CHUNK] if rows is None else images[rows[start : start + CHUNK]]
        if channels is not None:
            chunk = chunk[..., list(channels)] if channels_last else chunk[:, list(channels)]
        if channels_last:
            chunk = np.moveaxis(chunk, -1, 1)
        chunk = center_crop_square(chunk)
        x = normalize(chunk, value_range) if value_range else chunk.astype(np.float32, copy=False)
        out[start : start + CHUNK] = resize(torch.from_numpy(np.ascontiguousarray(x)), side)
    return out


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index per output pixel, as torch's ``nearest-exact`` computes it."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def preprocess_masks(
    masks: np.ndarray, size: int | None, *, rows: np.ndarray | None = None, labels: bool = False
) -> torch.Tensor:
    """(N, H, W) masks of any dtype -> float32 tensor (N', 1, size, size) in {0, 1} (nearest neighbour).

    The foreground threshold (:func:`mask_threshold`) comes from the dtype and the whole array, so every
    sample is binarised the same way.

    Args:
        masks: the masks as stored.
        size: the output side (``None``: the masks' own, cropped to a square).
        rows: the rows to take (``None``: all), gathered chunk by chunk.
        labels: label maps: keep the values as float32 class indices instead of binarising them.
    """
    threshold = None if labels else mask_threshold(masks)
    n = masks.shape[0] if rows is None else len(rows)
    side = size or min(masks.shape[1:3])
    out = torch.empty((n, 1, side, side), dtype=torch.float32)
    for start in range(0, n, CHUNK):
        chunk = masks[start : start + CHUNK] if rows is None else masks[rows[start : start + CHUNK]]
        chunk = center_crop_square(chunk)
        index = _nearest_index(chunk.shape[-1], side)
        chunk = chunk[:, index][:, :, index]
        chunk = chunk.astype(np.float32) if threshold is None else chunk > threshold
        out[start : start + CHUNK, 0] = torch.from_numpy(chunk)
    return out


def check_mask_values(value: str) -> str:
    """``value`` when it is one of :data:`MASK_VALUES`, else a one-line :class:`ConfigError`.

    Args:
        value: the ``mask_values`` option.
    """
    if value not in MASK_VALUES:
        raise ConfigError(f"mask_values={value!r}: choose binary ({{0, 1}} masks) or labels (label maps whose "
                          "values 0, 1, 2, ... are class indices)")
    return value


def _value_chunks(masks: np.ndarray) -> list[np.ndarray]:
    """``masks`` in pieces along the first axis, each of about :data:`_LEVEL_ELEMENTS` values (one mask, or a
    stack of them: a large npz array is never widened whole)."""
    if masks.ndim < 3 or masks.size <= _LEVEL_ELEMENTS:
        return [masks]
    step = max(1, _LEVEL_ELEMENTS // max(1, masks[0].size))
    return [masks[start : start + step] for start in range(0, masks.shape[0], step)]


def label_problem(masks: np.ndarray) -> str | None:
    """What keeps ``masks`` from being a label map of class indices, or ``None``: NaN / infinite values,
    values that are not whole numbers, negative values (the words follow "holds" / "hold" in a message).

    Args:
        masks: one mask (H, W) or a stack (N, H, W), as stored.
    """
    if masks.dtype.kind == "b" or masks.size == 0:
        return None
    for chunk in _value_chunks(masks):
        if chunk.dtype.kind in "fc":
            if not np.isfinite(chunk).all():
                return "NaN or infinite values; a label map holds class indices 0, 1, 2, ..."
            whole = chunk == np.round(chunk)
            if not whole.all():
                example = float(chunk[~whole].flat[0])
                return (f"non-integer values (e.g. {example:g}); a label map holds whole class indices 0, 1, 2, ... "
                        "(grey-level masks: mask_values='binary')")
        low = float(chunk.min())
        if low < 0:
            return f"negative values (min {low:g}); class indices start at 0 (background)"
    return None


def distinct_levels(masks: np.ndarray) -> np.ndarray:
    """The sorted distinct values (int64) of masks holding whole numbers >= 0 (check with :func:`label_problem`
    first); counted a piece at a time, so a large stack is never sorted or widened whole.

    Args:
        masks: one mask (H, W) or a stack (N, H, W).
    """
    if masks.size == 0:
        return np.zeros(0, dtype=np.int64)
    peak = int(masks.max())
    if peak >= 1 << 16:  # a few wide labels: unique is cheaper than a huge count array
        return np.unique(np.concatenate([np.unique(c) for c in _value_chunks(masks)])).astype(np.int64)
    counts = np.zeros(peak + 1, dtype=np.int64)
    for chunk in _value_chunks(masks):
        counts += np.bincount(chunk.reshape(-1).astype(np.int64), minlength=peak + 1)
    return np.flatnonzero(counts)


def label_map_levels(masks: np.ndarray) -> np.ndarray | None:
    """The distinct values of ``masks`` when they may be part of a label map read as binary (whole values
    >= 0, all below :data:`LABEL_MAP_LIMIT`), else ``None`` (0/255 masks, probabilities, grey levels).

    Args:
        masks: one mask (H, W) or a stack (N, H, W), as stored.
    """
    if masks.size == 0:
        return np.zeros(0, dtype=np.int64)
    if float(masks.max()) >= LABEL_MAP_LIMIT or float(masks.min()) < 0:  # NaN compares False: checked next
        return None
    if label_problem(masks) is not None:
        return None
    return distinct_levels(masks)


def label_map_message(levels: np.ndarray | list[int]) -> str:
    """The refusal of a label map read as binary masks, naming its values (the caller adds the file).

    Args:
        levels: the distinct values found (more than two).
    """
    values = [int(v) for v in levels]
    shown = ", ".join(str(v) for v in values[:4]) + (", ..." if len(values) > 4 else "")
    return (f"holds {len(values)} distinct values ({shown}): a multi-class label map; load it with "
            "mask_values='labels' (--mask-values labels)")


def mask_threshold(masks: np.ndarray, peak: float | None = None) -> float:
    """Foreground = ``masks > mask_threshold(masks)``; the threshold follows the dtype's value convention.

    * bool: as is; float: ``> 0.5`` (probabilities, {0, 1}, {0, 255} and label maps alike);
    * integer masks whose maximum is <= 10 are label maps ({0, 1}, {0, 1, 2, 4} ...): any label ``> 0``;
    * otherwise the masks are black/white at the bit depth of their values: ``> 127`` for 8-bit values
      (uint8, or 0..255 in a wider type), ``> 32767`` for 16-bit values, so JPEG noise (3, 250) reads right.

    ``peak`` is the maximum over the whole data set; pass it when ``masks`` is only part of the set, so every
    image and split is binarised the same way (never by its own maximum).
    """
    if masks.dtype == np.bool_:
        return 0.0
    if not np.issubdtype(masks.dtype, np.integer):
        return 0.5
    if peak is None:
        peak = float(masks.max()) if masks.size else 0.0
    if peak <= 10:
        return 0.0
    if masks.dtype == np.uint8 or peak <= 255:
        return 127.0
    if masks.dtype == np.uint16 or peak <= 65535:
        return 32767.0
    return float(np.iinfo(masks.dtype).max) / 2.0


def parse_channels(
    channels: str | int | Sequence[int | str] | None,
    num_channels: int,
    channel_names: Sequence[str] = (),
) -> list[int] | None:
    """Turn ``"1"``, ``"0,2"``, ``"flair"``, ``[0, 2]`` ... into channel indices (``None``: keep all).

    Names match ``channel_names`` case-insensitively, ignoring ``-``/``_``/spaces ("post_contrast").
    """
    if channels is None:
        return None
    if isinstance(channels, str):
        items: list[int | str] = [part.strip() for part in channels.split(",") if part.strip()]
    elif isinstance(channels, int):
        items = [channels]
    else:
        items = list(channels)
    if not items:
        raise ConfigError(f"channels={channels!r} selects no channel")

    def key(name: str) -> str:
        return "".join(ch for ch in name.lower() if ch.isalnum())

    by_name = {key(name): i for i, name in enumerate(channel_names)}
    valid = f"0..{num_channels - 1}" + (f" or {', '.join(channel_names)}" if channel_names else "")
    indices: list[int] = []
    for item in items:
        if isinstance(item, str) and not item.lstrip("-").isdigit():
            if key(item) not in by_name:
                known = f"names: {', '.join(channel_names)}" if channel_names else "no channel names"
                raise ConfigError(f"unknown channel {item!r}: this data set has {known}; use indices {valid}")
            indices.append(by_name[key(item)])
            continue
        index = int(item)
        if not -num_channels <= index < num_channels:
            raise ConfigError(f"channel {index} out of range: this data set has {num_channels} (use {valid})")
        indices.append(index % num_channels)
    return indices


def pad_to(images: torch.Tensor | np.ndarray, size: int, value: float = -1.0) -> torch.Tensor | np.ndarray:
    """Pad (..., H, W) symmetrically to (size, size) with ``value`` (e.g. 28 -> 32 with -1 = black).

    Why pad rather than resize: architectures that halve the resolution need powers of two, and padding
    keeps every original pixel unchanged.
    """
    h, w = images.shape[-2], images.shape[-1]
    if h > size or w > size:
        raise ConfigError(f"cannot pad {h}x{w} images to {size}: they are larger (crop or resize instead)")
    top, left = (size - h) // 2, (size - w) // 2
    bottom, right = size - h - top, size - w - left
    if isinstance(images, torch.Tensor):
        return F.pad(images, (left, right, top, bottom), value=value)
    width = [(0, 0)] * (images.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(images, width, constant_values=value)


def to_uint8(images: torch.Tensor | np.ndarray, *, channels_last: bool = True) -> np.ndarray:
    """Inverse of the [-1, 1] normalisation for saving: (N, C, H, W) or (C, H, W) -> uint8.

    Channels-last by default ((N, H, W, C) / (H, W, C)), as PIL and image writers expect; squeeze a
    single grey channel with ``[..., 0]`` before ``PIL.Image.fromarray``.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float32).numpy()
    out = np.clip(np.rint((np.asarray(images, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.moveaxis(out, -3, -1) if channels_last else out
