"""``.npz`` sources: the official MedMNIST layout and "named arrays".

MedMNIST layout: keys ``train_images``/``val_images``/``test_images`` (+ ``*_labels``); ``split`` picks one,
``"all"`` concatenates them (meta keeps each row's official split).
Multi-label files (ChestMNIST, labels (N, 14)): the **first column** is kept as a binary label
(ChestMNIST: atelectasis yes/no) and a warning says so; multi-label conditioning is not supported.

Named arrays: ``image_key`` (default ``images``) holds (N, H, W), (N, H, W, C) or (N, C, H, W) images of
uint8 / uint16 / bool / float / int (scaled as :func:`~synthmed.data.transforms.value_range` says; uint16
data below 65535 / 4, e.g. 12-bit, by the file's maximum; ``intensity_range=(low, high)`` states the range
instead); optional labels, masks, patient ids and a per-row split are read from the given keys or, when not
given, from keys called ``labels``, ``masks``, ``patient``, ``split`` (and a few spellings). String labels
become sorted class names. Masks are binarised later (``mask_values="binary"``), or are label maps of class
indices (``mask_values="labels"``: whole values >= 0, classes counted over every row).
A ``channel_names`` key, or a known file family (``lgg_mri_*``), names the channels.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data._core import RawData
from synthmed.data.intensity import IntensityMapping, check_intensity_range
from synthmed.data.transforms import (
    check_mask_values,
    distinct_levels,
    label_map_levels,
    label_map_message,
    label_problem,
    value_range,
)
from synthmed.errors import ConfigError, DataError, one_line

MEDMNIST_SPLITS = ("train", "val", "test")

# Keys looked for when the caller does not name them (first match wins).
AUTO_KEYS = {
    "label": ("labels", "label", "y"),
    "mask": ("masks", "mask", "segmentation"),
    "patient": ("patient", "patients", "patient_id", "patient_ids"),
    "split": ("split", "splits", "subset"),
}

# Channel names of known files without a ``channel_names`` key (matched on the file name's start).
KNOWN_CHANNEL_NAMES = {
    "lgg_mri": ("pre-contrast", "flair", "post-contrast"),  # TCGA-LGG kaggle_3m slices (Buda et al. 2019)
}


def open_npz(path: Path) -> NpzArrays:
    """The arrays of an .npz file, read key by key on use, with every failure as a one-line DataError."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(path, f"not a valid .npz file ({one_line(exc)})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(path, "is a single .npy array, not an .npz archive of named arrays")
    return NpzArrays(path, data)


class NpzArrays:
    """Read-on-demand view of an NpzFile (the images key can be hundreds of MB; labels are tiny)."""

    def __init__(self, path: Path, npz: Any) -> None:
        self.path, self.npz = path, npz
        self.names = list(npz.files)

    def keys(self) -> list[str]:
        return list(self.names)

    def __contains__(self, key: object) -> bool:
        return key in self.names

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self.npz[key]
        except ValueError as exc:  # object arrays need pickle, which is never enabled on user files
            raise DataError(
                self.path,
                f"array '{key}' cannot be read without pickle ({one_line(exc)}); "
                "store strings as fixed-width unicode arrays",
            ) from exc
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(self.path, f"array '{key}' is corrupt ({one_line(exc)})") from exc


def is_medmnist_layout(keys: list[str]) -> bool:
    return any(f"{s}_images" in keys for s in MEDMNIST_SPLITS)


def _labels_1d(path: Path, key: str, labels: np.ndarray) -> np.ndarray:
    """(N,) or (N, 1) integer labels; multi-label (N, K) keeps column 0 (documented in the module)."""
    if labels.ndim == 2 and labels.shape[1] > 1:
        warnings.warn(
            f"{path}: '{key}' is multi-label ({labels.shape[1]} columns); keeping the first column as a "
            "binary label",
            stacklevel=3,
        )
        labels = labels[:, 0]
    labels = labels.reshape(labels.shape[0], -1)[:, 0] if labels.ndim > 1 else labels
    return labels


def _int_labels(path: Path, key: str, labels: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels as int64 (>= 0), or string labels mapped to sorted class names."""
    labels = _labels_1d(path, key, labels)
    if labels.dtype.kind in "USO":
        names, codes = np.unique(labels.astype(str), return_inverse=True)
        return codes.astype(np.int64), tuple(names.tolist())
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise DataError(path, f"labels '{key}' must be whole numbers (class indices)")
    elif labels.dtype.kind not in "iub":
        raise DataError(path, f"labels '{key}' have unsupported dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(
            path, f"labels '{key}' contain negative values (min {labels.min()}); classes must be 0..K-1"
        )
    return labels, ()


def _images_layout(path: Path, key: str, images: np.ndarray) -> tuple[np.ndarray, bool]:
    """Images as (N, C, H, W) or (N, H, W, C); returns (array, channels_last)."""
    if images.dtype.kind not in "uifb":
        raise DataError(
            path, f"'{key}' has dtype {images.dtype}; expected uint8, uint16, float or int images"
        )
    if images.ndim == 3:
        return images[:, None], False  # (N, H, W): one grey channel
    if images.ndim == 4:
        if images.shape[-1] <= 4:
            return images, True
        if images.shape[1] <= 4:
            return images, False
    raise DataError(
        path, f"'{key}' has shape {images.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)"
    )


def _masks(path: Path, key: str, masks: np.ndarray, n: int, hw: tuple[int, ...]) -> np.ndarray:
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    elif masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.ndim != 3 or masks.shape[0] != n or tuple(masks.shape[1:]) != hw:
        expected = f"({n}, {hw[0]}, {hw[1]})"
        raise DataError(
            path, f"masks '{key}' have shape {masks.shape}; expected {expected} to match the images"
        )
    return masks


def _mask_classes(path: Path, key: str, masks: np.ndarray, mask_values: str, refuse_label_maps: bool) -> int:
    """The class count of label-map masks over every row (largest label + 1, at least 2), their values checked;
    0 for binary masks, refused when ``refuse_label_maps`` (mask targets) and they are a multi-class label map.

    Args:
        path: the file, for messages.
        key: the masks' array name.
        masks: the (N, H, W) masks as stored.
        mask_values: ``"binary"`` or ``"labels"``.
        refuse_label_maps: the masks become targets: binary mode refuses a label map instead of binarising it.
    """
    if mask_values == "labels":
        problem = label_problem(masks)
        if problem is not None:
            raise DataError(path, f"array '{key}' holds {problem}")
        levels = distinct_levels(masks)
        if 255 in levels and set(levels.tolist()) <= {0, 255}:
            raise DataError(path, f"array '{key}' holds only the values 0 and 255: binary masks, not a label map; "
                                  "load them with mask_values='binary'")
        return max(int(levels.max(initial=0)) + 1, 2)
    if refuse_label_maps:
        levels_found = label_map_levels(masks)
        if levels_found is not None and levels_found.size > 2:
            raise DataError(path, f"array '{key}' " + label_map_message(levels_found))
    return 0


def _find(keys: list[str], role: str, given: str | None, path: Path) -> str | None:
    if given is not None:
        if given not in keys:
            raise DataError(path, f"no array named '{given}' ({role}); the file has: {', '.join(keys)}")
        return given
    return next((k for k in AUTO_KEYS[role] if k in keys), None)


def _channel_names(path: Path, arrays: NpzArrays, num_channels: int) -> tuple[str, ...]:
    if "channel_names" in arrays:
        names = tuple(str(n) for n in np.asarray(arrays["channel_names"]).reshape(-1).tolist())
    else:
        names = next((v for k, v in KNOWN_CHANNEL_NAMES.items() if path.name.lower().startswith(k)), ())
    return names if len(names) == num_channels else ()


def _intensity(images: np.ndarray, scale: tuple[float, float]) -> dict:
    """The file's mapping for ``DataInfo.intensity``: one range for every image (``fixed``), its array's dtype."""
    return IntensityMapping("fixed", *scale, dtype=images.dtype.name).to_dict()


def read_npz(
    path: Path,
    *,
    split: str = "train",
    image_key: str = "images",
    label_key: str | None = None,
    mask_key: str | None = None,
    patient_key: str | None = None,
    split_key: str | None = None,
    class_names: tuple[str, ...] = (),
    attribution: str = "",
    source: str | None = None,
    intensity_range: tuple[float, float] | None = None,
    mask_values: str = "binary",
    refuse_label_maps: bool = False,
) -> RawData:
    """Read an .npz in MedMNIST layout or as named arrays (see the module docstring); ``intensity_range``
    states the range mapped to [-1, 1] instead of :func:`~synthmed.data.transforms.value_range`'s (named arrays
    only: refused for MedMNIST files, whose 8-bit images are always scaled 0..255); ``mask_values`` reads the
    masks as ``"binary"`` or as ``"labels"`` (label maps); ``refuse_label_maps`` (masks read as targets)
    refuses binary masks that are a multi-class label map."""
    intensity_range = check_intensity_range(intensity_range)
    check_mask_values(mask_values)
    arrays = open_npz(path)
    keys = list(arrays.keys())
    if is_medmnist_layout(keys) and image_key == "images" and "images" not in keys:
        if intensity_range is not None:
            raise ConfigError(f"intensity_range={intensity_range!r} does not apply to {source or path}: MedMNIST "
                              "images are scaled by their dtype (8-bit: 0..255)")
        return _read_medmnist(path, arrays, keys, split, class_names, attribution, source)

    if image_key not in keys:
        raise DataError(
            path,
            f"no image array '{image_key}'; the file has: {', '.join(keys) or 'no arrays'} "
            "(pass image_key=...)",
        )
    images, channels_last = _images_layout(path, image_key, arrays[image_key])
    n = images.shape[0]
    hw = tuple(images.shape[1:3] if channels_last else images.shape[2:4])

    def per_row(role: str, given: str | None) -> tuple[str | None, np.ndarray | None]:
        key = _find(keys, role, given, path)
        if key is None:
            return None, None
        value = arrays[key]
        if value.shape[:1] != (n,):
            raise DataError(path, f"'{key}' has {value.shape[0] if value.ndim else 0} rows for {n} images")
        return key, value

    label_name, labels = per_row("label", label_key)
    names: tuple[str, ...] = ()
    if labels is not None:
        labels, names = _int_labels(path, str(label_name), labels)
    mask_name, masks = per_row("mask", mask_key)
    mask_classes = 0
    if masks is not None:
        masks = _masks(path, str(mask_name), masks, n, hw)
        mask_classes = _mask_classes(path, str(mask_name), masks, mask_values, refuse_label_maps)
    _, patients = per_row("patient", patient_key)
    _, splits = per_row("split", split_key)
    num_channels = images.shape[-1] if channels_last else images.shape[1]
    # Over the whole file, so every split is scaled the same way.
    scale = intensity_range or value_range(images, source=str(path))
    return RawData(
        source=source or str(path),
        images=images,
        value_range=scale,
        intensity=_intensity(images, scale),
        channels_last=channels_last,
        labels=labels,
        masks=masks,
        patients=None if patients is None else patients.astype(str).reshape(-1),
        splits=None if splits is None else splits.astype(str).reshape(-1),
        meta=[{"index": i} for i in range(n)],
        class_names=names or class_names,
        channel_names=_channel_names(path, arrays, num_channels),
        attribution=attribution,
        mask_classes=mask_classes,
    )


def _read_medmnist(
    path: Path,
    arrays: NpzArrays,
    keys: list[str],
    split: str,
    class_names: tuple[str, ...],
    attribution: str,
    source: str | None,
) -> RawData:
    wanted = MEDMNIST_SPLITS if split == "all" else (split,)
    if split != "all" and split not in MEDMNIST_SPLITS:
        raise DataError(path, f"MedMNIST files have the splits train, val, test (or 'all'), not '{split}'")
    missing = [s for s in wanted if f"{s}_images" not in keys]
    if missing:
        raise DataError(
            path, f"MedMNIST layout without '{missing[0]}_images'; the file has: {', '.join(keys)}"
        )
    parts, label_parts, meta, all_labels = [], [], [], []
    for s in wanted:
        images = arrays[f"{s}_images"]
        parts.append(images)
        if f"{s}_labels" in keys:
            label_parts.append(_labels_1d(path, f"{s}_labels", arrays[f"{s}_labels"]))
        meta.extend({"split": s, "index": i} for i in range(images.shape[0]))
    for s in MEDMNIST_SPLITS:  # the label space comes from every split, not just the selected one
        if f"{s}_labels" in keys and s not in wanted:
            all_labels.append(_labels_1d(path, f"{s}_labels", arrays[f"{s}_labels"]))
    images = parts[0] if len(parts) == 1 else np.concatenate(parts)
    images, channels_last = _images_layout(path, f"{wanted[0]}_images", images)
    peak = None
    if images.dtype == np.uint16:  # the range comes from every split, so all splits are scaled alike
        peak = max(float(arrays[f"{s}_images"].max(initial=0)) for s in MEDMNIST_SPLITS if f"{s}_images" in keys)
    labels = None
    num_classes = 0
    if label_parts and len(label_parts) == len(parts):
        labels = np.concatenate(label_parts).astype(np.int64)
        everything = np.concatenate([labels, *all_labels]) if all_labels else labels
        num_classes = len(class_names) or int(everything.max()) + 1
    scale = value_range(images, peak=peak, source=str(path))
    return RawData(
        source=source or str(path),
        images=images,
        value_range=scale,
        intensity=_intensity(images, scale),
        channels_last=channels_last,
        labels=labels,
        meta=meta,
        class_names=class_names if labels is not None else (),
        num_classes=num_classes,
        channel_names=("red", "green", "blue") if images.shape[-1 if channels_last else 1] == 3 else (),
        attribution=attribution,
        split_name=split,
    )
