"""NIfTI sources: ``.nii`` / ``.nii.gz`` files or a folder of them (needs ``pip install synthmed[nifti]``).

Each volume is reoriented to RAS (``nibabel.as_closest_canonical``) and cut into 2D slices along ``axis``
(a spatial axis, default the last: axial for RAS), each rotated so anterior / superior is up. Intensities are
clipped to the ``percentiles`` (default 0.5-99.5) of the whole volume, which removes scanner outliers without
per-slice contrast jumps, then scaled to [-1, 1]
(``intensity_range=(low, high)``: that range instead, the same for every volume; the mapping is recorded in
``DataInfo.intensity``, :mod:`synthmed.data.intensity`). All-zero slices (outside the head / body) are skipped
unless ``skip_empty=False``. 4D files (X, Y, Z, T): the first volume, or with ``channels`` the chosen volumes
as channels (e.g. co-registered modalities).

Patient ids (splits are by patient, so every modality and slice of a case lands in one split):

* In a folder whose first-level sub-folders are **per-case folders**, the sub-folder's name: BraTS
  ``case_001/case_001_flair.nii.gz``, BIDS ``sub-01/anat/sub-01_T1w.nii.gz``, KiTS ``case_00000/imaging.nii.gz``.
  A sub-folder is a case folder when every file in it starts with the folder's name, or when all its files
  share one id after the modality suffix is removed; otherwise it is a container (``imagesTr/``, ``flair/``).
* Otherwise the file name without extension and without a trailing ``_<modality>`` / ``-<modality>``
  among :data:`MODALITIES` (``IXI002_T1`` and ``IXI002_T2`` are one patient, ``IXI002``).

In a folder, segmentation / label volumes are skipped with a warning: names ending in ``seg``,
``segmentation``, ``mask``, ``label(s)`` (``case_001_seg.nii.gz``, ``brainmask.nii.gz``) and files under a
``labels``/``labelsTr``/``labelsTs``/``masks``/``segmentations`` folder. A single file given directly is
always read.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data._core import RawData, assemble, refuse_non_finite
from synthmed.data.dataset import ImageDataset
from synthmed.data.transforms import fit_square, normalize, parse_channels
from synthmed.errors import ConfigError, DataError, one_line

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


# Modality suffixes removed from file names to get the patient id (BraTS, IXI, BIDS spellings).
MODALITIES = (
    "t1", "t1w", "t1ce", "t1c", "t1gd", "t1n", "t2", "t2w", "t2f", "flair", "pd", "pdw", "dwi", "adc", "seg", "mask",
)  # fmt: skip
LABEL_ENDINGS = ("seg", "segmentation", "mask", "label", "labels")
LABEL_FOLDERS = ("labels", "labelstr", "labelsts", "masks", "segmentations")
_MODALITY_SUFFIX = re.compile(r"[_-](?:" + "|".join(MODALITIES) + r")$", re.IGNORECASE)


def is_label_volume(path: Path, root: Path | None = None) -> bool:
    """A segmentation / label volume by its name (or, under ``root``, by a ``labels``-like folder)."""
    if nifti_stem(path).lower().endswith(LABEL_ENDINGS):
        return True
    folders = path.relative_to(root).parts[:-1] if root is not None else ()
    return any(folder.lower() in LABEL_FOLDERS for folder in folders)


def strip_modality(stem: str) -> str:
    """``case_001_flair`` -> ``case_001``; names without a known modality suffix stay as they are."""
    return _MODALITY_SUFFIX.sub("", stem) or stem


def patient_ids(files: list[Path], root: Path | None) -> list[str]:
    """Patient id per file (see the module docstring)."""
    by_folder: dict[str, list[Path]] = {}
    if root is not None:
        for path in files:
            parts = path.relative_to(root).parts
            if len(parts) > 1:
                by_folder.setdefault(parts[0], []).append(path)
    cases = {
        folder
        for folder, members in by_folder.items()
        if all(nifti_stem(m).lower().startswith(folder.lower()) for m in members)
        or len({strip_modality(nifti_stem(m)).lower() for m in members}) == 1
    }
    ids = []
    for path in files:
        parts = path.relative_to(root).parts if root is not None else (path.name,)
        ids.append(parts[0] if len(parts) > 1 and parts[0] in cases else strip_modality(nifti_stem(path)))
    return ids


def _nibabel(path: Path) -> Any:
    try:
        import nibabel
    except ImportError as exc:
        raise DataError(path, "reading NIfTI needs nibabel: pip install synthmed[nifti]") from exc
    return nibabel


def _volume(path: Path) -> np.ndarray:
    """(X, Y, Z, T) float32 data in RAS orientation."""
    return _canonical(path)[1]


def _original_shape(path: Path) -> tuple[int, ...]:
    """The file's array shape as stored (before reorientation), from its header."""
    return tuple(int(s) for s in _nibabel(path).load(path).shape)


def _canonical(path: Path) -> tuple[Any, np.ndarray]:
    """The image reoriented to RAS (``nibabel.as_closest_canonical``: its affine, header and stored dtype) and
    its (X, Y, Z, T) float32 data."""
    nib = _nibabel(path)
    if path.stat().st_size == 0:
        raise DataError(path, "not a NIfTI file (empty file, 0 bytes)")
    try:
        img = nib.as_closest_canonical(nib.load(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:  # ImageFileError, gzip / EOF errors on truncated files, header errors
        raise DataError(path, f"not a valid NIfTI file ({one_line(exc)})") from exc
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise DataError(path, f"has {data.ndim} dimensions {data.shape}; expected a 2D, 3D or 4D image")
    return img, data


def read_nifti(
    files: list[Path],
    *,
    source: str,
    axis: int = -1,
    percentiles: tuple[float, float] = (0.5, 99.5),
    skip_empty: bool = True,
    channels: Any = None,
    size: int | None = None,
    root: Path | None = None,
    intensity_range: tuple[float, float] | None = None,
) -> RawData:
    """Read NIfTI files into 2D slices (see the module docstring). ``channels`` selects 4D volumes; ``root``
    is the folder the files were found in (``None``: files given directly, label volumes not skipped);
    ``intensity_range=(low, high)`` maps that range of every volume to [-1, 1] instead of its percentiles."""
    from synthmed.data.intensity import IntensityMapping, check_intensity_range

    intensity_range = check_intensity_range(intensity_range)
    if axis not in (-3, -2, -1, 0, 1, 2):
        raise ConfigError(f"axis must be a spatial axis (0, 1, 2 or -1, -2, -3), got {axis}")
    if root is not None:
        labels = [p for p in files if is_label_volume(p, root)]
        files = [p for p in files if not is_label_volume(p, root)]
        if labels and not files:
            raise DataError(
                source, f"contains only segmentation / label volumes (e.g. {labels[0].name}), no images"
            )
        if labels:
            warnings.warn(
                f"{source}: skipped {len(labels)} segmentation / label volume(s) such as {labels[0].name} "
                "(names ending in seg / mask / label); they are not images",
                stacklevel=2,
            )
    ids = patient_ids(files, root)
    images, patients, meta = [], [], []
    volume_count, dtype = None, None
    for path, patient in zip(files, ids, strict=True):
        img, data = _canonical(path)
        dtype = dtype or img.get_data_dtype().name
        picked = parse_channels(channels, data.shape[-1]) if channels is not None else [0]
        if volume_count is not None and len(picked) != volume_count:
            raise DataError(path, "has a different number of volumes than the other files")
        volume_count = len(picked)
        raw = data[..., picked]
        spatial = axis % 3
        refuse_non_finite(np.moveaxis(raw, spatial, 0), path, "slice")  # before the volume's percentiles
        scaled = np.empty_like(raw)
        for c in range(raw.shape[-1]):
            lo, hi = intensity_range or np.percentile(raw[..., c], percentiles)
            scaled[..., c] = normalize(raw[..., c], (float(lo), float(hi) if hi > lo else float(lo) + 1.0))
        for k in range(raw.shape[spatial]):
            if skip_empty and not np.any(np.take(raw, k, axis=spatial)):
                continue
            plane = np.moveaxis(np.take(scaled, k, axis=spatial), -1, 0)  # (C, a, b)
            plane = np.ascontiguousarray(np.rot90(plane, axes=(1, 2)))  # RAS: anterior / superior up
            images.append(plane if size is None else fit_square(plane, size))
            patients.append(patient)
            meta.append({"path": str(path), "slice": k, "axis": spatial})
    if not images:
        raise DataError(source, "has no non-empty slices" + (" (skip_empty=True)" if skip_empty else ""))
    if intensity_range is not None:
        intensity = IntensityMapping("fixed", *intensity_range, dtype=str(dtype))
    else:
        intensity = IntensityMapping("volume_percentiles", percentiles=tuple(percentiles), dtype=str(dtype))
    return RawData(source=source, images=images, patients=np.asarray(patients, dtype=str), meta=meta,
                   intensity=intensity.to_dict())


def load_nifti(
    path: str | Path,
    *,
    axis: int = -1,
    percentiles: Sequence[float] = (0.5, 99.5),
    skip_empty: bool = True,
    size: int | None = None,
    split: str = "train",
    channels: Any = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    intensity_range: tuple[float, float] | None = None,
    normalize: str = "none",
) -> ImageDataset:
    """A NIfTI file or folder of them as an :class:`ImageDataset` of 2D slices; ``intensity_range=(low, high)``
    replaces the per-volume ``percentiles``; ``normalize``: see :mod:`synthmed.data.normalize` (patients: the
    files' patient ids)."""
    path = Path(path).expanduser()
    if path.is_dir():
        from synthmed.data.folder import list_files

        files = [p for p in list_files(path) if is_nifti(p)]
        if not files:
            raise DataError(path, "contains no NIfTI files (.nii, .nii.gz)")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(path, "no such file or folder")
    lo, hi = percentiles
    raw = read_nifti(
        files,
        source=str(path),
        axis=axis,
        percentiles=(lo, hi),
        skip_empty=skip_empty,
        channels=channels,
        size=size,
        root=path if path.is_dir() else None,
        intensity_range=intensity_range,
    )
    return assemble(
        raw, size=size, split=split, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
        normalize=normalize,
    )
