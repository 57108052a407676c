"""Shared last steps of every reader: split selection, channel selection, normalisation, crop/resize.

Readers return a :class:`RawData` (arrays as stored, plus what is known about them); :func:`assemble`
turns it into the one :class:`ImageDataset`, so every source gets identical preprocessing.
"""

from __future__ import annotations

import numbers
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.data.dataset import DataInfo, ImageDataset
from synthmed.data.normalize import check_normalize, normalize_images, recorded
from synthmed.data.splits import SPLITS, patient_split, stratified_patient_split, stratified_split
from synthmed.data.transforms import (
    CHUNK,
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


# True while a pair reads a source's masks as its targets (see mask_targets).
_MASK_TARGETS: ContextVar[bool] = ContextVar("synthmed_mask_targets", default=False)


@contextmanager
def mask_targets() -> Iterator[None]:
    """Within it, loaders read masks as training targets: binary masks (``mask_values="binary"``) that are a
    multi-class label map are refused rather than binarised, since a segmentation target must not silently
    lose its classes. Masks of plain image data keep their documented rule (any label > 0 is foreground).
    A context rather than an option, so the user-facing options of ``load_dataset`` stay as they are."""
    token = _MASK_TARGETS.set(True)
    try:
        yield
    finally:
        _MASK_TARGETS.reset(token)


def reading_mask_targets() -> bool:
    """Whether masks are being read as targets (inside :func:`mask_targets`)."""
    return _MASK_TARGETS.get()


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
    #: Split patients stratified by label: only for labels from a CSV (synthmed.data.labels). Sources that had
    #: both before keep their plain patient split, so the test split of an existing run never moves.
    stratify_patients: bool = False
    #: How stored values became [-1, 1] (:class:`synthmed.data.intensity.IntensityMapping` as a dict), for
    #: ``DataInfo.intensity``; empty when the reader does not know.
    intensity: dict[str, Any] = field(default_factory=dict)
    #: Label-map masks (data option ``mask_values="labels"``): the class count over every row (every split), and
    #: ``masks`` hold class indices, kept as they are; 0: binary masks, {0, 1} (or still to be binarised).
    mask_classes: int = 0

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
    stratify_patients: bool = False,
) -> np.ndarray | None:
    """Indices of ``split`` (``None`` for ``"all"``).

    An explicit per-sample split wins; otherwise patients are split by patient (no leakage; with
    ``stratify_patients`` and labels, keeping each class's share of patients), labelled data stratified by
    class, anything else randomly, all seeded. Warns (one line naming ``source``) when a split
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
    if patients is not None and stratify_patients and labels is not None:
        parts = stratified_patient_split(patients, labels, val_fraction, test_fraction, seed)
    elif patients is not None:
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


def first_non_finite(images: np.ndarray | list[np.ndarray]) -> int | None:
    """Index (along the first axis, or in the list) of the first image holding NaN or infinity; ``None`` when
    every value is finite. Integer and bool images are finite by type and not read; float arrays are checked
    :data:`~synthmed.data.transforms.CHUNK` images at a time, one vectorised ``isfinite`` each."""
    if isinstance(images, list):
        return next((i for i, img in enumerate(images) if img.dtype.kind in "fc" and not np.isfinite(img).all()),
                    None)
    if images.dtype.kind not in "fc":
        return None
    for start in range(0, images.shape[0], CHUNK):
        chunk = images[start : start + CHUNK]
        finite = np.isfinite(chunk).reshape(chunk.shape[0], -1).all(axis=1)
        if not finite.all():
            return start + int(np.argmin(finite))
    return None


def non_finite_problem(what: str, image: np.ndarray) -> str:
    """The message for an image with non-finite pixels: what it is (``"image 3"``) and what it holds."""
    nan, inf = bool(np.isnan(image).any()), bool(np.isinf(image).any())
    kind = "NaN and infinite" if nan and inf else "NaN" if nan else "infinite"
    return (f"{what} has {kind} pixel values, which cannot be scaled to [-1, 1] or trained on; "
            "repair them (e.g. numpy.nan_to_num) or drop that image")


def refuse_non_finite(images: np.ndarray, path: str | Path, what: str = "image") -> None:
    """Raise a :class:`DataError` naming ``path`` and ``what`` with the index of the first image (along the first
    axis) holding NaN or infinity. Readers call this on values they pool into one range (a volume's
    percentiles, a series' min..max), before a single NaN spreads to every image of the pool."""
    index = first_non_finite(images)
    if index is not None:
        raise DataError(path, non_finite_problem(f"{what} {index}", images[index]))


def _refuse_non_finite_raw(raw: RawData) -> None:
    """Refuse ``raw`` when any image (every row, before split selection) holds NaN or infinity, naming the file
    and the image as the reader's ``meta`` records it."""
    index = first_non_finite(raw.images)
    if index is None:
        return
    meta = raw.meta[index] if raw.meta else {}
    path = meta.get("path", raw.source)
    if "slice" in meta or "frame" in meta:
        what = f"slice {meta['slice']}" if "slice" in meta else f"frame {meta['frame']}"
    elif "path" in meta:
        what = "the image"  # one image per file (image folders)
    else:
        what = f"image {meta.get('index', index)}" + (f" of split '{meta['split']}'" if "split" in meta else "")
    raise DataError(path, non_finite_problem(what, raw.images[index]))


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
    normalize: str = "none",
) -> ImageDataset:
    """Select split and channels, normalise, crop to square, resize; build the :class:`ImageDataset`.

    Images holding NaN or infinity are refused first (any row, any split), naming the file and the image.
    ``normalize`` (``"patient"`` / ``"image"``) then rescales the images per patient / per image by their own
    percentiles (:mod:`synthmed.data.normalize`; masks untouched) and records it in ``info.intensity``.
    """
    check_normalize(normalize)
    if len(raw) == 0:
        raise DataError(raw.source, "contains no images")
    _refuse_non_finite_raw(raw)  # every row, so the index is the file's and no split ever sees a NaN
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
            stratify_patients=raw.stratify_patients,
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
    images = normalize_images(images, normalize, raw.patients)

    masks = None
    labels_kept = raw.mask_classes > 0  # label maps keep their class indices; binary masks are thresholded
    if isinstance(raw.masks, list):
        masks = torch.cat([preprocess_masks(m[None], side, labels=labels_kept) for m in raw.masks])
    elif raw.masks is not None:
        masks = preprocess_masks(raw.masks, side, rows=rows, labels=labels_kept)

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
        intensity=recorded(raw.intensity, normalize),
        mask_classes=raw.mask_classes if masks is not None else 0,
    )
    patients = None if raw.patients is None else np.asarray(raw.patients).astype(str)
    return ImageDataset(
        images=images, info=info, labels=labels, masks=masks, patients=patients, meta=raw.meta
    )
