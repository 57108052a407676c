"""Image folders: PNG / JPEG / TIFF / BMP / GIF files, searched recursively.

Layout rules (in this order):

* **Split folders.** If every first-level sub-folder is a split name (``train``, ``val``/``valid``/
  ``validation``, ``test``), those folders are the split and the level below them holds the groups.
* **Groups: classes or patients** (``folder_groups``). The first-level sub-folder of each image (below the
  split folders, if any) is either its **class** or its **patient**:

  - ``"class"``: sorted folder names -> labels 0..K-1 (for classes kept in a table: ``labels=CSV``, below).
    No labels are made when some images lie directly in the root, when there is only one class, or when every
    "class" holds a single image (one folder per case, e.g. PH2's ``IMDxxx/``: they are cases, not classes).
    Splits are then stratified per image.
  - ``"patient"``: the folder name is the patient id (``patients``), no labels; splits are made by patient,
    so all slices of one patient land in one split (kaggle_3m: ``TCGA_xx/TCGA_xx_N.tif``). An image directly
    in the root is its own patient (its file name).
  - ``"auto"`` (default): patients when there are **more than 20 sub-folders** (class folders are few,
    patient folders many) **or when sub-folders hold images with paired mask files** (``_mask``/``_lesion``:
    segmentation data come one folder per case); classes otherwise. A warning says which was chosen and
    how to override it.
* **Labels from a CSV** (``labels=``, see :mod:`synthmed.data.labels`): a table names each image's class, by
  file name or by case folder (``PH2_dataset.csv``: ``Name`` = ``IMDxxx``). First-level sub-folders are then
  never classes but cases: each is one patient, kept whole in one split, and the splits are stratified by
  label (``folder_groups="class"`` is refused; an image directly in the root is its own case).
* **Masks.** A file whose name ends in ``_mask`` (kaggle_3m) or ``_lesion`` (PH2) before the extension is
  the mask of the image with the same name without that suffix in the same first-level folder; it is not
  an image. If any image has a mask, every image must have one (a missing tumour mask must not silently
  read as "no tumour"). Foreground follows the masks' value convention, decided over the whole folder
  (every split), never per image: see :func:`~synthmed.data.transforms.mask_threshold` (label maps: any
  label > 0; 8-bit black/white: > 127, which also reads JPEG-noisy masks right). Palette masks with colour
  palettes are read as their palette indices (label maps). With ``mask_values="labels"`` the masks are label
  maps instead: their whole values are class indices (0 = background), kept as they are (nearest-neighbour
  resize), and ``DataInfo.mask_classes`` is the largest label over every mask file (every split) + 1, at
  least 2; colour, non-integer or negative masks, and masks of only 0 / 255 (binary), are refused.
* **Pixels.** 8-bit images are scaled by 255, 16-bit by 65535 (their dtype range), float images by their
  own range. 16-bit grey images whose maximum over the whole folder is below 65535 / 4 (10/12/14-bit data,
  e.g. 0..4095) are scaled by that maximum instead, with a warning. ``intensity_range=(low, high)`` states
  the range of 16-bit and float images instead (8-bit images keep 0..255; a folder of only 8-bit images
  refuses it). The mapping used is recorded in ``DataInfo.intensity`` (:mod:`synthmed.data.intensity`).
  Grey stays 1 channel, colour becomes RGB
  (alpha dropped; palette images become grey when the palette is grey, else RGB; multi-page files: first
  page). Mixed grey and colour files are all converted to the majority (ties -> RGB), with a warning: a
  data set must have one channel count.
* Every image is centre-cropped to a square and resized to ``size`` (default: the most common side) as it
  is read, so large folders never sit in memory at full resolution.
* **Size limit.** An image above PIL's ``Image.MAX_IMAGE_PIXELS`` (its decompression-bomb guard, about 89 M
  pixels) is refused, with its size, from its header: it would be decoded whole into memory (PIL itself only
  warns up to twice that). Downscale or tile whole-slide images first.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from synthmed.data._core import SPLIT_ALIASES, RawData, common_side, split_indices
from synthmed.data.labels import LabelSource, SampleName, assign_labels
from synthmed.data.transforms import (
    check_mask_values,
    distinct_levels,
    fit_mask,
    fit_square,
    label_map_levels,
    label_map_message,
    label_problem,
    mask_threshold,
    normalize,
    uint16_range,
)
from synthmed.errors import ConfigError, DataError

IMAGE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".gif": "GIF",
}
MASK_SUFFIXES = ("_mask", "_lesion")
FOLDER_GROUPS = ("auto", "class", "patient")
AUTO_PATIENT_FOLDERS = 20  # "auto": more sub-folders than this are patients, not classes
_GREY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


@dataclass
class _Entry:
    path: Path
    key: tuple[str, str, str]  # (split folder, first-level folder, stem without mask suffix)
    split: str | None
    group: str
    mask: Path | None = None


def _mask_stem(stem: str) -> str | None:
    low = stem.lower()
    return next((stem[: -len(s)] for s in MASK_SUFFIXES if low.endswith(s) and len(stem) > len(s)), None)


def _too_large(path: Path, size: tuple[int, int] | None, exc: Exception | None = None) -> DataError:
    """The error for an image above PIL's pixel limit (``Image.MAX_IMAGE_PIXELS``, its decompression-bomb
    guard), which is kept: such an image (e.g. a whole-slide scan) would be decoded whole into memory."""
    if size is not None:
        found = f"{size[0]}x{size[1]} px ({size[0] * size[1]:,} pixels)"
    else:  # PIL refused to return the image; its message still has the pixel count
        count = re.search(r"\((\d+) pixels\)", str(exc))
        found = f"{int(count.group(1)):,} pixels" if count else "too large"
    return DataError(
        path,
        f"image is {found}, above the limit of {Image.MAX_IMAGE_PIXELS:,} pixels (PIL.Image.MAX_IMAGE_PIXELS, "
        "a guard against decompression bombs); downscale or tile it first, or raise that limit if you trust "
        "the file",
    )


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header of an image that ``Image.open`` refuses (above 2x the pixel limit):
    the format plugins read headers without PIL's size check, which ``Image.open`` applies afterwards."""
    try:
        Image.init()
        with open(path, "rb") as fp:
            prefix = fp.read(16)
            for name in Image.ID:
                factory, accept = Image.OPEN[name]
                result = not accept or accept(prefix)
                if not result or isinstance(result, str):
                    continue
                fp.seek(0)
                try:
                    return tuple(factory(fp, str(path)).size)  # type: ignore[return-value]
                except Exception:  # not this format: try the next one, as Image.open does
                    fp.seek(0)
    except Exception:  # only for the message: the pixel count from PIL's error is used instead
        pass
    return None


def _open(path: Path) -> Image.Image:
    kind = IMAGE_FORMATS.get(path.suffix.lower(), "image")
    if path.stat().st_size == 0:
        raise DataError(path, f"not a valid {kind} image (empty file, 0 bytes)")
    try:
        with warnings.catch_warnings():
            # Refused below, with the image's size, at the limit itself (PIL only warns up to 2x the limit).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _too_large(path, _header_size(path), exc) from exc
    except UnidentifiedImageError as exc:
        raise DataError(path, f"not a valid {kind} image (cannot identify image file)") from exc
    except OSError as exc:
        raise DataError(path, f"cannot read {kind} image ({' '.join(str(exc).split())})") from exc
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and img.width * img.height > limit:
        size = img.size
        img.close()
        raise _too_large(path, size)
    return img


def _is_grey(img: Image.Image) -> bool:
    if img.mode in _GREY_MODES:
        return True
    if img.mode in ("P", "PA"):
        palette = img.getpalette() or []
        rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
        return bool(np.all(rgb == rgb[:, :1]))
    return False


def _is_16bit(img: Image.Image) -> bool:
    """16-bit grey (PIL reads 16-bit PNG / TIFF as ``I;16*`` or as its 32-bit ``I`` container)."""
    return img.mode.startswith("I;16") or img.mode == "I"


def _decode(path: Path) -> tuple[np.ndarray, str]:
    """One image's stored values and PIL mode: (H, W) grey in its own dtype (``L``, ``I;16*``, ``I``, ``F``), or
    (H, W) uint8 (mode ``L``) / (H, W, 3) uint8 (mode ``RGB``) for palette, 1-bit, alpha and colour images."""
    img = _open(path)
    try:
        with img:
            img.load()
            img = ImageOps.exif_transpose(img)  # phone / dermoscope JPEGs store rotation in EXIF
            if _is_grey(img) and img.mode not in ("P", "PA", "1", "LA", "La"):
                array, mode = np.asarray(img), img.mode
                if array.ndim == 3:
                    array = array[..., 0]
            else:
                mode = "L" if _is_grey(img) else "RGB"
                array = np.asarray(img.convert(mode))
    except DataError:
        raise
    except Image.DecompressionBombError as exc:  # a frame or layer larger than the header said (GIF, ICO)
        raise _too_large(path, None, exc) from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated / corrupt payloads surface on load()
        raise DataError(path, f"corrupt or truncated image ({' '.join(str(exc).split())})") from exc
    return array, mode


def _grey_range(
    mode: str, array: np.ndarray, range16: tuple[float, float], float_range: tuple[float, float] | None = None
) -> tuple[float, float]:
    """The stored range a grey image of PIL ``mode`` maps to [-1, 1]: ``range16`` for 16-bit images, 0..255 for
    8-bit, ``float_range`` (else 0..1 within [0, 1], else the image's own min..max) for float images."""
    if mode.startswith("I;16"):
        return range16  # 16-bit: scale by the dtype's range (or the folder's), not by 255
    if mode == "I":  # PIL's 32-bit container, used for 16-bit PNG/TIFF
        in_16 = array.min() >= 0 and array.max() <= 65535
        return range16 if in_16 else (float(array.min()), float(array.max()) or 1.0)
    if mode == "F":
        if float_range is not None:
            return float_range
        lo, hi = float(array.min()), float(array.max())
        return (0.0, 1.0) if lo >= 0 and hi <= 1 else (lo, hi if hi > lo else lo + 1)
    return (0.0, 255.0)


def _pixels(
    path: Path,
    grey: bool,
    range16: tuple[float, float] = (0.0, 65535.0),
    float_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Decode one image to float32 (C, H, W) in [-1, 1] with 1 (grey) or 3 (RGB) channels; 16-bit grey
    images map ``range16`` (the folder's, see the module docstring) to [-1, 1], float images ``float_range``
    when given (a stated ``intensity_range``)."""
    array, mode = _decode(path)
    if array.ndim == 2:
        out = normalize(array, _grey_range(mode, array, range16, float_range))[None]
    else:
        out = np.moveaxis(normalize(array, (0.0, 255.0)), -1, 0)
    if grey and out.shape[0] == 3:
        out = (0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2])[None].astype(np.float32)  # ITU-R 601 luma
    elif not grey and out.shape[0] == 1:
        out = np.repeat(out, 3, axis=0)
    return out


def _mask_pixels(path: Path) -> np.ndarray:
    """One mask as stored: (H, W) uint8 / uint16 / int32 / float32 values (binarised later, per data set).

    1-bit masks become 0/255, colour-palette masks their palette indices (label maps), colour masks grey.
    """
    img = _open(path)
    try:
        with img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode == "1":
                array = np.asarray(img, dtype=np.uint8) * np.uint8(255)
            elif img.mode == "P" and not _is_grey(img):
                array = np.asarray(img)  # palette indices: the labels of a label map (e.g. VOC-style PNGs)
            elif _is_grey(img) and img.mode not in ("P", "PA", "LA", "La"):
                array = np.asarray(img)
            else:
                array = np.asarray(img.convert("L"))
    except DataError:
        raise
    except Image.DecompressionBombError as exc:  # a frame or layer larger than the header said (GIF, ICO)
        raise _too_large(path, None, exc) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(path, f"corrupt or truncated mask image ({' '.join(str(exc).split())})") from exc
    if array.dtype.byteorder == (">" if np.little_endian else "<"):
        array = array.astype(array.dtype.newbyteorder("="))  # I;16B: native order, so dtypes compare equal
    return array[..., 0] if array.ndim == 3 else array


def _label_pixels(path: Path) -> np.ndarray:
    """One label-map mask as stored: (H, W) class indices (grey values, colour-palette indices; 1-bit as 0 / 1),
    refused with a :class:`DataError` naming the file when it is colour or holds no class indices."""
    with _open(path) as img:
        mode, colour = img.mode, not _is_grey(img) and img.mode != "P"
    if colour:
        raise DataError(path, f"is a colour ({mode}) image; a label map holds class indices in one grey channel "
                              "(or as palette indices)")
    array = _mask_pixels(path)
    if mode == "1":
        array = (array > 0).astype(np.uint8)  # _mask_pixels writes 1-bit masks as 0 / 255
    problem = label_problem(array)
    if problem is not None:
        raise DataError(path, f"holds {problem}")
    return array


def label_classes(found: dict[Path, np.ndarray], others: list[Path]) -> int:
    """The class count of label-map mask files (largest label + 1, at least 2) over the whole set, so it does
    not depend on the split: the distinct values ``found`` in the files already read, and every other file,
    read and checked here.

    Args:
        found: the distinct values (:func:`~synthmed.data.transforms.distinct_levels`) of each file read.
        others: the set's other mask files (the other splits).

    Raises:
        DataError: a file that is no label map, or masks of only 0 and 255 (binary masks, naming one of them).
    """
    levels = dict(found)
    for path in others:
        levels[path] = distinct_levels(_label_pixels(path))
    union = set().union(*(v.tolist() for v in levels.values())) if levels else set()
    if 255 in union and union <= {0, 255}:  # the usual binary mask read with the wrong option
        example = next(p for p, v in levels.items() if 255 in v)
        raise DataError(example, "holds only the values 0 and 255, as do all the masks of its set: binary masks, not a "
                                 "label map; load them with mask_values='binary'")
    return max(int(max(union, default=0)) + 1, 2)


@dataclass
class _LabelMapCheck:
    """Binary mode for mask targets: gathers mask values while every mask so far could be part of a label map
    (:func:`~synthmed.data.transforms.label_map_levels`), to refuse the set when it is one."""

    values: set[int] = field(default_factory=set)
    open: bool = True
    example: Path | None = None  # the file with the most distinct values
    example_levels: np.ndarray | None = None

    def add(self, mask: np.ndarray, path: Path) -> None:
        if not self.open:
            return
        levels = label_map_levels(mask)
        if levels is None:
            self.open = False  # 0/255, grey levels, probabilities: binarised as always
            return
        self.values.update(levels.tolist())
        if self.example_levels is None or levels.size > self.example_levels.size:
            self.example, self.example_levels = path, levels

    def refuse(self) -> None:
        if not self.open or len(self.values) <= 2 or self.example is None:
            return
        if self.example_levels is not None and self.example_levels.size > 2:
            raise DataError(self.example, label_map_message(self.example_levels))
        # No file holds three values, but together they do (one file 0/1, another 0/2): still a label map.
        raise DataError(self.example, "with the other masks of its set " + label_map_message(sorted(self.values)))


def _mask_dtype(path: Path) -> np.dtype:
    """The dtype :func:`_mask_pixels` gives, from the header only."""
    with _open(path) as img:
        mode = img.mode
    if mode.startswith("I;16"):
        return np.dtype(np.uint16)
    return np.dtype({"I": np.int32, "F": np.float32}.get(mode, np.uint8))


def _peak_settled(dtype: np.dtype, peak: float) -> bool:
    """True when no larger maximum could change :func:`mask_threshold` for this dtype."""
    if dtype.kind not in "iu":
        return True
    return peak > {np.dtype(np.uint8): 10, np.dtype(np.uint16): 255}.get(dtype, 65535)


def _mask_peaks(
    read: list[np.ndarray], others: list[Path], read_paths: list[Path] | None = None
) -> dict[np.dtype, float]:
    """Maximum per mask dtype over the whole folder: the masks already ``read`` (the selected split), and
    of ``others`` only as many as can still change the threshold (label maps: all; 0/255 masks: none).

    Args:
        read: the masks read (the selected split).
        others: the set's other mask files.
        read_paths: the files of ``read``, given for mask targets: a set that is a multi-class label map (whole
            values below :data:`~synthmed.data.transforms.LABEL_MAP_LIMIT`, more than two in all) is then
            refused with a :class:`DataError` instead of binarised.
    """
    peaks: dict[np.dtype, float] = {}
    check = None if read_paths is None else _LabelMapCheck()
    for i, mask in enumerate(read):
        peaks[mask.dtype] = max(peaks.get(mask.dtype, 0.0), float(mask.max(initial=0)))
        if check is not None and read_paths is not None:
            check.add(mask, read_paths[i])
    for path in others:
        dtype = _mask_dtype(path)
        if _peak_settled(dtype, peaks.get(dtype, 0.0)) and (check is None or not check.open):
            continue
        mask = _mask_pixels(path)
        peaks[mask.dtype] = max(peaks.get(mask.dtype, 0.0), float(mask.max(initial=0)))
        if check is not None:
            check.add(mask, path)
    if check is not None:
        check.refuse()
    return peaks


def _sixteen_bit_range(root: Path, paths: list[Path]) -> tuple[float, float]:
    """Range for the folder's 16-bit grey images: 0..65535, or 0..max over all of them when that is below
    65535 / 4 (12-bit data in 16-bit files), so every image and split is scaled the same way."""
    peak = 0.0
    for path in paths:
        with _open(path) as img:
            try:
                array = np.asarray(img)
            except Image.DecompressionBombError as exc:
                raise _too_large(path, None, exc) from exc
            except (OSError, ValueError, SyntaxError) as exc:
                raise DataError(path, f"corrupt or truncated image ({' '.join(str(exc).split())})") from exc
        if array.size and array.min() >= 0 and array.max() <= 65535:  # "I" files beyond 16 bit: own range
            peak = max(peak, float(array.max()))
            if peak >= 65535 / 4:
                break  # full 16-bit data: dtype scaling, no need to look further
    return uint16_range(peak, str(root))


def folder_scaling(
    root: Path,
    count: int,
    sixteen: list[Path],
    floats: int,
    grey: bool,
    intensity_range: tuple[float, float] | None = None,
) -> tuple[tuple[float, float], dict]:
    """The range of a folder's 16-bit grey images (the stated ``intensity_range``, else :func:`_sixteen_bit_range`)
    and the folder's mapping (:func:`folder_intensity`).

    Args:
        root: the folder.
        count: its number of images.
        sixteen: its 16-bit grey files.
        floats: its number of float images.
        grey: the images are read as grey.
        intensity_range: the stated range of 16-bit and float images, or ``None``.
    """
    if intensity_range is not None:
        range16 = intensity_range
    else:
        range16 = _sixteen_bit_range(root, sixteen) if sixteen else (0.0, 65535.0)
    counts = (count - len(sixteen) - floats, len(sixteen), floats)
    return range16, folder_intensity(root, counts, grey, range16, intensity_range)


def list_files(root: Path) -> list[Path]:
    """Every non-hidden file under ``root``, sorted (deterministic order = deterministic splits)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _group_mode(root: Path, folder_groups: str, groups: Counter, images: list[_Entry]) -> str:
    """"class" or "patient" for the sub-folders (see the module docstring); warns what "auto" chose."""
    if folder_groups != "auto":
        return folder_groups
    folders = [g for g in groups if g]
    if not folders:
        return "class"  # all images in the root: nothing to decide
    paired = any(e.mask is not None and e.group for e in images)
    if len(folders) > AUTO_PATIENT_FOLDERS or paired:
        why = "they hold images with mask files" if paired else f"more than {AUTO_PATIENT_FOLDERS}"
        warnings.warn(
            f"{root}: {len(folders)} sub-folder{'s' if len(folders) > 1 else ''} read as patients ({why}), so "
            "splits keep each patient whole; "
            "pass folder_groups='class' if they are classes",
            stacklevel=5,
        )
        return "patient"
    if len(folders) >= 2 and "" not in groups and max(groups.values()) > 1:
        warnings.warn(
            f"{root}: {len(folders)} sub-folders read as classes (labels {', '.join(sorted(folders)[:3])}"
            f"{', ...' if len(folders) > 3 else ''}); pass folder_groups='patient' if each holds one patient",
            stacklevel=5,
        )
    return "class"


def _labels_and_patients(
    root: Path, images: list[_Entry], folder_groups: str, label_source: LabelSource | None
) -> tuple[np.ndarray | None, tuple[str, ...], np.ndarray | None]:
    """Labels (or ``None``), class names and patient ids (or ``None``) of the images, by the layout rules."""
    if label_source is not None:
        return _table_labels(root, images, folder_groups, label_source)
    groups = Counter(e.group for e in images)
    mode = _group_mode(root, folder_groups, groups, images)
    use_labels = mode == "class" and "" not in groups and len(groups) >= 2 and max(groups.values()) > 1
    class_names = tuple(sorted(groups)) if use_labels else ()
    labels = np.asarray([class_names.index(e.group) for e in images], dtype=np.int64) if use_labels else None
    patients = np.asarray([e.group or e.path.stem for e in images], dtype=str) if mode == "patient" else None
    return labels, class_names, patients


def _table_labels(
    root: Path, images: list[_Entry], folder_groups: str, label_source: LabelSource
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray | None]:
    """Labels from the CSV; sub-folders are cases (patients), so a case never straddles two splits."""
    if folder_groups == "class":
        raise ConfigError(f"labels={str(label_source.csv)!r} and folder_groups='class' both give the classes; "
                          "with a labels CSV, sub-folders are cases (leave folder_groups as auto or patient)")
    labels, class_names = assign_labels(label_source, [SampleName(e.path, e.group) for e in images], root)
    has_cases = any(e.group for e in images)
    patients = np.asarray([e.group or e.path.stem for e in images], dtype=str) if has_cases else None
    return labels, class_names, patients


def _scan_headers(images: list[_Entry]) -> tuple[list[tuple[int, int]], int, list[Path], int]:
    """Header-only scan of every file (cheap): finds corrupt and oversized files up front, and gives what fixes
    one channel count and one size for all splits alike: (height, width) per image, the number of grey images,
    the 16-bit grey files and the number of float images."""
    shapes, grey_votes, sixteen, floats = [], 0, [], 0
    for entry in images:
        with _open(entry.path) as img:
            shapes.append((img.height, img.width))
            grey_votes += _is_grey(img)
            floats += img.mode == "F"
            if _is_16bit(img):
                sixteen.append(entry.path)
    return shapes, grey_votes, sixteen, floats


def folder_intensity(
    root: Path,
    counts: tuple[int, int, int],
    grey: bool,
    range16: tuple[float, float],
    intensity_range: tuple[float, float] | None = None,
) -> dict:
    """The folder's :class:`~synthmed.data.intensity.IntensityMapping` as a dict, for ``DataInfo.intensity``:
    fixed 0..255 uint8 (8-bit and colour images), fixed ``range16`` uint16 (16-bit grey), float32 images by
    their own range (``image_range``) or the stated ``intensity_range``; mixed folders record the majority.

    Args:
        root: the folder, for the error message.
        counts: the numbers of 8-bit, 16-bit and float images.
        grey: the images are read as grey (else RGB: always 8-bit).
        range16: the range 16-bit images map to [-1, 1].
        intensity_range: the stated range of 16-bit and float images; refused for 8-bit-only folders.
    """
    from synthmed.data.intensity import IntensityMapping

    eight, sixteen, floats = counts
    if intensity_range is not None and not (sixteen or floats):
        raise ConfigError(f"intensity_range={intensity_range!r} applies to 16-bit and float images; {root} holds "
                          "8-bit images (always scaled 0..255)")
    if not grey or eight > max(sixteen, floats):
        return IntensityMapping("fixed", 0.0, 255.0, dtype="uint8").to_dict()
    if sixteen >= floats:
        return IntensityMapping("fixed", *range16, dtype="uint16").to_dict()
    if intensity_range is not None:
        return IntensityMapping("fixed", *intensity_range, dtype="float32").to_dict()
    return IntensityMapping("image_range", dtype="float32").to_dict()


def _entry_mask(entry: _Entry, shape: tuple[int, ...], side: int, found: dict[Path, np.ndarray] | None) -> np.ndarray:
    """The mask of ``entry``, checked against its image's ``shape`` and fitted to ``side`` with its values kept
    (binary masks are binarised later, one rule for the set).

    Args:
        entry: an image with a mask file.
        shape: its image's (H, W).
        side: the output side.
        found: label maps: where to record the file's distinct values (full size); ``None``: binary masks.
    """
    path = entry.mask
    assert path is not None
    mask = _mask_pixels(path) if found is None else _label_pixels(path)
    if found is not None:
        found[path] = distinct_levels(mask)
    if mask.shape != tuple(shape):
        raise DataError(path, f"is {mask.shape[1]}x{mask.shape[0]} px but its image {entry.path.name} is "
                              f"{shape[1]}x{shape[0]} px")
    return fit_mask(mask, side)


def read_image_folder(
    root: Path,
    files: list[Path],
    *,
    size: int | None = None,
    split: str = "train",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    folder_groups: str = "auto",
    label_source: LabelSource | None = None,
    intensity_range: tuple[float, float] | None = None,
    mask_values: str = "binary",
    refuse_label_maps: bool = False,
) -> RawData:
    """Read the image files ``files`` (found under ``root``) following the module's layout rules;
    ``folder_groups`` (``"auto"``, ``"class"``, ``"patient"``) says what sub-folders are; ``label_source``
    (a CSV, :mod:`synthmed.data.labels`) gives the labels, its sub-folders then being cases;
    ``intensity_range`` replaces the range of 16-bit and float grey images (8-bit images keep 0..255; a
    folder of 8-bit images only refuses it); ``mask_values`` reads ``_mask`` files as ``"binary"`` masks or as
    ``"labels"`` (label maps, see the module docstring); ``refuse_label_maps`` (masks read as targets) refuses
    binary masks that are a multi-class label map instead of binarising them."""
    labels_kept = check_mask_values(mask_values) == "labels"
    if folder_groups not in FOLDER_GROUPS:
        raise ConfigError(f"folder_groups={folder_groups!r}: choose one of {', '.join(FOLDER_GROUPS)}")
    rels = [f.relative_to(root).parts for f in files]
    first = {parts[0].lower() for parts in rels if len(parts) > 1}
    split_mode = all(len(p) > 1 for p in rels) and bool(first) and first <= set(SPLIT_ALIASES)
    depth = 1 if split_mode else 0

    images: list[_Entry] = []
    masks: dict[tuple[str, str, str], Path] = {}
    for path, parts in zip(files, rels, strict=True):
        split_dir = SPLIT_ALIASES[parts[0].lower()] if split_mode else None
        group = parts[depth] if len(parts) > depth + 1 else ""
        base = _mask_stem(path.stem)
        if base is not None:
            masks[(split_dir or "", group, base)] = path
        else:
            images.append(_Entry(path, (split_dir or "", group, path.stem), split_dir, group))
    if not images:
        raise DataError(root, "contains no images (only mask files)" if masks else "contains no images")

    for entry in images:
        entry.mask = masks.pop(entry.key, None)
    if masks:
        warnings.warn(
            f"{root}: {len(masks)} mask file(s) without a matching image, e.g. {next(iter(masks.values()))}",
            stacklevel=2,
        )
    with_mask = [e for e in images if e.mask is not None]
    if with_mask and len(with_mask) != len(images):
        missing = next(e for e in images if e.mask is None)
        raise DataError(
            missing.path,
            f"has no mask file (e.g. {missing.path.stem}_mask{missing.path.suffix}) "
            f"although {len(with_mask)} other images have one",
        )

    labels, class_names, patients = _labels_and_patients(root, images, folder_groups, label_source)

    shapes, grey_votes, sixteen, floats = _scan_headers(images)
    grey = grey_votes > len(images) - grey_votes
    if 0 < grey_votes < len(images):
        target = "grey" if grey else "RGB"
        warnings.warn(
            f"{root}: {grey_votes} grey and {len(images) - grey_votes} colour images; all converted to "
            f"{target} (the majority)",
            stacklevel=2,
        )
    side = size or common_side(shapes)
    range16, intensity = folder_scaling(root, len(images), sixteen, floats, grey, intensity_range)

    idx = split_indices(
        len(images),
        split,
        source=root,
        labels=labels,
        patients=patients,
        splits=np.asarray([e.split for e in images]) if split_mode else None,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        stratify_patients=label_source is not None,
    )
    selected = range(len(images)) if idx is None else idx.tolist()
    if not selected:
        raise DataError(root, f"split '{split}' is empty ({len(images)} images in all); use split='all'")

    out_images, out_masks, meta = [], [], []
    found: dict[Path, np.ndarray] = {}  # label maps: each file's distinct values, at full size
    for i in selected:
        entry = images[i]
        pixels = _pixels(entry.path, grey, range16, intensity_range)
        out_images.append(fit_square(pixels, side))
        info = {"path": str(entry.path)}
        if entry.mask is not None:
            out_masks.append(_entry_mask(entry, pixels.shape[1:], side, found if labels_kept else None))
            info["mask_path"] = str(entry.mask)
        if entry.split:
            info["split"] = entry.split
        meta.append(info)
    mask_classes = 0
    if out_masks:
        chosen = set(selected)
        others = [e.mask for i, e in enumerate(images) if i not in chosen and e.mask is not None]
        if labels_kept:
            mask_classes = label_classes(found, others)  # every split's files: one class count for all
        else:
            read_paths = [images[i].mask for i in selected] if refuse_label_maps else None
            peaks = _mask_peaks(out_masks, others, read_paths)  # type: ignore[arg-type]
            out_masks = [m > mask_threshold(m[:0], peak=peaks[m.dtype]) for m in out_masks]

    return RawData(
        source=str(root),
        images=out_images,
        labels=None if labels is None else labels[list(selected)],
        masks=out_masks or None,
        patients=None if patients is None else patients[list(selected)],
        meta=meta,
        class_names=class_names,
        num_classes=len(class_names),
        channel_names=() if grey else ("red", "green", "blue"),
        split_name=split,
        intensity=intensity,
        mask_classes=mask_classes,
    )
