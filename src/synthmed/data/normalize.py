"""Per-patient / per-image intensity normalisation (the data option ``normalize``).

MRI has no absolute unit: one scanner's FLAIR reaches 42 where another's reaches 180, and a network trained on
one fixed 0..255 scaling misses the dark patients entirely. As Buda et al. (2019, ``normalize_volume``) and
nnU-Net do, ``normalize`` rescales each group of images by its own percentiles:

* ``"none"``: the loader's mapping only (:mod:`synthmed.data.intensity`);
* ``"patient"``: per patient (the data's patient ids; each image on its own without them) and per channel, the
  values are clipped to the patient's [1st, 99th] percentile over all its pixels (every slice, background
  included) and mapped linearly onto [-1, 1];
* ``"image"``: the same per image (each 2-D image or slice).

The loaders' mappings are linear, so the percentiles are taken of the [-1, 1] values the loader made: the result
equals ``2 (v - p1) / (p99 - p1) - 1`` (clipped) in stored values ``v`` with their percentiles ``p1`` / ``p99``,
which is how ``DataInfo.intensity`` records it (``IntensityMapping.normalize``). A group whose percentile range
is degenerate (``p99 == p1``, e.g. an all-black slice) maps to -1. Masks are never normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from synthmed.errors import ConfigError

__all__ = ["NORMALIZE", "PERCENTILES", "check_normalize", "group_limits", "normalize_images", "recorded", "rescale"]

NORMALIZE = ("none", "patient", "image")
#: The percentiles each patient (image) is clipped to before it is mapped onto [-1, 1].
PERCENTILES = (1.0, 99.0)


def check_normalize(value: Any) -> str:
    """The ``normalize`` option, checked: one of :data:`NORMALIZE`.

    Args:
        value: the option as given.

    Raises:
        ConfigError: any other value, in one line.
    """
    if value not in NORMALIZE:
        raise ConfigError(f"normalize={value!r}: choose one of {', '.join(NORMALIZE)}")
    return str(value)


def group_limits(images: np.ndarray, percentiles: Sequence[float] = PERCENTILES) -> np.ndarray:
    """Per-channel percentiles (C, 2) over every pixel of ``images`` (N, C, H, W) (all images together).

    Args:
        images: one group's images (a patient's slices, or one image as N = 1).
        percentiles: the low and high percentile.
    """
    channels = images.shape[1]
    flat = np.moveaxis(np.asarray(images, dtype=np.float32), 1, 0).reshape(channels, -1)
    return np.percentile(flat, list(percentiles), axis=1).T.astype(np.float64)


def rescale(images: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """``images`` (N, C, H, W) clipped to each channel's ``limits`` (C, 2) and mapped onto [-1, 1] (float32);
    a channel with ``high <= low`` becomes -1.

    Args:
        images: the values to rescale.
        limits: per channel (low, high), as :func:`group_limits` gives them.
    """
    out = np.empty(images.shape, dtype=np.float32)
    for c, (low, high) in enumerate(np.asarray(limits, dtype=np.float64)):
        if not high > low:
            out[:, c] = -1.0
            continue
        scale = np.float32(2.0 / (high - low))
        out[:, c] = (images[:, c].astype(np.float32) - np.float32(low)) * scale - np.float32(1.0)
    return np.clip(out, -1.0, 1.0, out=out)


def _groups(n: int, mode: str, patients: Sequence[Any] | np.ndarray | None) -> list[np.ndarray]:
    """Row indices of each group: one per patient (``mode="patient"`` with ids), else one per image."""
    if mode == "patient" and patients is not None:
        ids = np.asarray(patients).astype(str)
        _, inverse = np.unique(ids, return_inverse=True)
        return [np.flatnonzero(inverse == k) for k in range(int(inverse.max()) + 1)] if n else []
    return [np.asarray([i]) for i in range(n)]


def normalize_images(images: torch.Tensor, mode: str, patients: Sequence[Any] | np.ndarray | None = None,
                     percentiles: Sequence[float] = PERCENTILES) -> torch.Tensor:
    """``images`` (N, C, H, W) in [-1, 1] normalised per patient or per image (see the module docstring).

    Args:
        images: the loader's images.
        mode: ``"none"`` (returned as they are), ``"patient"`` or ``"image"``.
        patients: a patient id per image (``None``: each image is its own patient).
        percentiles: the low and high percentile.
    """
    if check_normalize(mode) == "none" or images.shape[0] == 0:
        return images
    array = images.detach().cpu().numpy()
    out = np.empty(array.shape, dtype=np.float32)
    for rows in _groups(array.shape[0], mode, patients):
        group = array[rows]
        out[rows] = rescale(group, group_limits(group, percentiles))
    return torch.from_numpy(out)


def recorded(intensity: dict[str, Any], mode: str) -> dict[str, Any]:
    """``DataInfo.intensity`` with ``normalize`` recorded (unchanged for ``"none"``).

    Args:
        intensity: the loader's mapping as a dict (empty when unknown: the 8-bit default is assumed, as
            :mod:`synthmed.translate` assumes for such runs).
        mode: the ``normalize`` option.
    """
    if check_normalize(mode) == "none":
        return dict(intensity)
    from synthmed.data.intensity import IntensityMapping

    base = dict(intensity) if intensity else IntensityMapping().to_dict()
    return {**base, "normalize": mode, "normalize_percentiles": list(PERCENTILES)}
