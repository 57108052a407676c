"""Shared last steps of every reader: split selection, channel selection, normalisation, crop/resize.

Readers return a :class:`RawData` (arrays as stored, plus what is known about them); :func:`assemble`
turns it into the one :class:`ImageDataset`, so every source gets identical preprocessing.
"""

from __future__ import annotations

import numbers
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.data.dataset import DataInfo, ImageDataset
from synthmed.data.splits import SPLITS, patient_split, stratified_split
from synthmed.data.transforms import (
    center_crop_square,
    parse_channels,
    preprocess_images,
    preprocess_masks,
    resize,
)
from synthmed.errors import ConfigError, DataError

# Common spellings of the validation split in folder names and split arrays.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass
class RawData:
    """Arrays as a reader found them, before the shared preprocessing.

    ``images`` is either one stacked native-dtype array, (N, C, H, W) or (N, H, W, C) with
    ``channels_last``, normalised later with ``value_range``; or a list of float32 (C, H, W) arrays already
    in [-1, 1] (``value_range=None``), which may differ in size (image folders, DICOM, NIfTI).
    """

    source: str
    images: np.ndarray | list[np.ndarray]
    value_range: tuple[float, float] | None = None
    channels_last: bool = False
    labels: np.ndarray | None = None
    masks: np.ndarray | list[np.ndarray] | None = None  # (N, H, W) or list of (H, W)
    patients: np.ndarray | None = None
    splits: np.ndarray | None = None  # explicit split name per sample, if the source has one
    meta: list[dict[str, Any]] = field(default_factory=list)
    class_names: tuple[str, ...] = ()
    num_classes: int = 0
    channel_names: tuple[str, ...] = ()
    attribution: str = ""
    split_name: str | None = None  # set when the reader already selected the split

    def __len__(self) -> int:
        return len(self.images) if isinstance(self.images, list) else int(self.images.shape[0])

    @property
    def num_channels(self) -> int:
        if isinstance(self.images, list):
            return int(self.images[0].shape[0])
        return int(self.images.shape[-1] if self.channels_last else self.images.shape[1])


def split_indices(
    n: int,
    split: str,
    *,
    source: str | Path,
    labels: np.ndarray | None = None,
    patients: np.ndarray | None = None,
    splits: np.ndarray | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> np.ndarray | None:
    """Indices of ``split`` (``None`` for ``"all"``).

    An explicit per-sample split wins; otherwise patients are split by patient (no leakage), labelled data
    stratified by class, anything else randomly, all seeded. Warns (one line naming ``source``) when a split
    is made per image, without patient ids, and when an explicit split puts a patient in two splits.
    """
    if split == "all":
        return None
    if splits is not None:
        names = np.asarray([SPLIT_ALIASES.get(str(s).lower(), str(s)) for s in splits])
        if patients is not None:
            _warn_crossing_patients(source, np.asarray(patients).astype(str), names)
        wanted = SPLIT_ALIASES.get(split.lower(), split)
        idx = np.flatnonzero(names == wanted)
        if idx.size == 0:
            present = ", ".join(sorted(set(names.tolist())))
            raise DataError(
                source, f"no samples in split '{split}'; the split array has: {present} (or use 'all')"
            )
        return idx
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: choose one of train, val, test, all")
    if patients is not None:
        parts = patient_split(patients, val_fraction, test_fraction, seed)
    else:
        warnings.warn(
            f"{source}: split '{split}' made per image (no patient ids); slices or images of one patient may "
            "cross splits unless patient ids are given (npz: patient_key=..., image folders: "
            "folder_groups='patient')",
            stacklevel=3,
        )
        parts = stratified_split(
            labels if labels is not None else np.zeros(n), val_fraction, test_fraction, seed
        )
    return parts[split]


def _warn_crossing_patients(source: str | Path, patients: np.ndarray, names: np.ndarray) -> None:
    """Warn when an explicit per-row split puts one patient in more than one split."""
    splits_of: dict[str, set[str]] = {}
    for patient, name in zip(patients.tolist(), names.tolist(), strict=True):
        splits_of.setdefault(patient, set()).add(name)
    crossing = sorted(p for p, found in splits_of.items() if len(found) > 1)
    if crossing:
        warnings.warn(
            f"{source}: the split array puts {len(crossing)} patient{'s' if len(crossing) > 1 else ''} "
            f"(of {len(splits_of)}) in more than one "
            f"split, e.g. '{crossing[0]}' in {', '.join(sorted(splits_of[crossing[0]]))}; their images leak "
            "between splits (fix the split array, or leave it out to split by patient)",
            stacklevel=4,
        )


def _take(raw: RawData, idx: np.ndarray) -> np.ndarray | None:
    """Keep only rows ``idx`` of every per-sample field (in place), except stacked image / mask arrays:
    those are gathered chunk by chunk during preprocessing, so their row index is returned instead."""
    rows = None
    if isinstance(raw.images, list):
        raw.images = [raw.images[i] for i in idx]
    else:
        rows = idx
    if isinstance(raw.masks, list):
        raw.masks = [raw.masks[i] for i in idx]
    for name in ("labels", "patients", "splits"):
        value = getattr(raw, name)
        if value is not None:
            setattr(raw, name, value[idx])
    if raw.meta:
        raw.meta = [raw.meta[i] for i in idx]
    return rows


def common_side(shapes: list[tuple[int, int]]) -> int:
    """Square side for images of different sizes when no ``size`` is given: the most common cropped side
    (ties -> the smaller, so nothing is upsampled needlessly)."""
    counts = Counter(min(h, w) for h, w in shapes)
    best = max(counts.values())
    return min(side for side, count in counts.items() if count == best)


def _stack_list(images: list[np.ndarray], size: int | None) -> torch.Tensor:
    side = size or common_side([img.shape[-2:] for img in images])
    out = torch.empty((len(images), images[0].shape[0], side, side), dtype=torch.float32)
    for i, img in enumerate(images):
        x = torch.from_numpy(np.ascontiguousarray(center_crop_square(img), dtype=np.float32))
        out[i] = resize(x[None], side)[0]
    return out


def assemble(
    raw: RawData,
    *,
    size: int | None = None,
    split: str = "train",
    channels: Any = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> ImageDataset:
    """Select split and channels, normalise, crop to square, resize; build the :class:`ImageDataset`."""
    if len(raw) == 0:
        raise DataError(raw.source, "contains no images")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ConfigError(f"size must be a positive integer, got {size!r}")
        size = int(size)
    num_classes = raw.num_classes
    if raw.labels is not None and not num_classes:
        # From all rows, before split selection, so a split missing a class does not shrink the label space.
        num_classes = len(raw.class_names) or int(raw.labels.max()) + 1
    split_name = raw.split_name or split
    rows = None
    if raw.split_name is None:
        idx = split_indices(
            len(raw),
            split,
            source=raw.source,
            labels=raw.labels,
            patients=raw.patients,
            splits=raw.splits,
            seed=seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
        )
        if idx is not None:
            if idx.size == 0:
                raise DataError(raw.source, f"split '{split}' is empty ({len(raw)} samples); use split='all'")
            rows = _take(raw, idx)

    channel_names = raw.channel_names
    picked = parse_channels(channels, raw.num_channels, channel_names)
    if picked is not None and channel_names:
        channel_names = tuple(channel_names[i] for i in picked)
    if isinstance(raw.images, list):
        if picked is not None:
            raw.images = [img[picked] for img in raw.images]
        images = _stack_list(raw.images, size)
    else:
        images = preprocess_images(
            raw.images, raw.value_range, size, channels_last=raw.channels_last, rows=rows, channels=picked
        )
    side = images.shape[-1]

    masks = None
    if isinstance(raw.masks, list):
        masks = torch.cat([preprocess_masks(m[None], side) for m in raw.masks])
    elif raw.masks is not None:
        masks = preprocess_masks(raw.masks, side, rows=rows)

    labels = None if raw.labels is None else torch.as_tensor(raw.labels.astype(np.int64))
    info = DataInfo(
        source=raw.source,
        channels=int(images.shape[1]),
        height=side,
        width=side,
        num_classes=num_classes if labels is not None else 0,
        class_names=raw.class_names if labels is not None else (),
        split=split_name,
        channel_names=channel_names,
        attribution=raw.attribution,
    )
    patients = None if raw.patients is None else np.asarray(raw.patients).astype(str)
    return ImageDataset(
        images=images, info=info, labels=labels, masks=masks, patients=patients, meta=raw.meta
    )
