"""Image folders: PNG / JPEG / TIFF / BMP / GIF files, searched recursively.

Layout rules (in this order):

* **Split folders.** If every first-level sub-folder is a split name (``train``, ``val``/``valid``/
  ``validation``, ``test``), those folders are the split and the level below them holds the classes.
* **Classes.** Otherwise the first-level sub-folder of each image is its class (sorted names -> labels
  0..K-1). No labels are made when some images lie directly in the root, when there is only one class, or
  when every "class" holds a single image (one folder per case, e.g. PH2's ``IMDxxx/``: they are cases,
  not classes).
* **Masks.** A file whose name ends in ``_mask`` (kaggle_3m) or ``_lesion`` (PH2) before the extension is
  the mask of the image with the same name without that suffix in the same first-level folder; it is not
  an image. If any image has a mask, every image must have one (a missing tumour mask must not silently
  read as "no tumour").
* **Pixels.** 8-bit images are scaled by 255, 16-bit by 65535 (their dtype range), float images by their
  own range. Grey stays 1 channel, colour becomes RGB (alpha dropped; palette images become grey when
  the palette is grey, else RGB; multi-page files: first page). Mixed grey and colour files are all
  converted to the majority (ties -> RGB), with a warning: a data set must have one channel count.
* Every image is centre-cropped to a square and resized to ``size`` (default: the most common side) as it
  is read, so large folders never sit in memory at full resolution.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from synthmed.data._core import SPLIT_ALIASES, RawData, common_side, split_indices
from synthmed.data.transforms import fit_square, normalize, preprocess_masks
from synthmed.errors import DataError

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


def _open(path: Path) -> Image.Image:
    kind = IMAGE_FORMATS.get(path.suffix.lower(), "image")
    if path.stat().st_size == 0:
        raise DataError(path, f"not a valid {kind} image (empty file, 0 bytes)")
    try:
        return Image.open(path)
    except UnidentifiedImageError as exc:
        raise DataError(path, f"not a valid {kind} image (cannot identify image file)") from exc
    except OSError as exc:
        raise DataError(path, f"cannot read {kind} image ({' '.join(str(exc).split())})") from exc


def _is_grey(img: Image.Image) -> bool:
    if img.mode in _GREY_MODES:
        return True
    if img.mode in ("P", "PA"):
        palette = img.getpalette() or []
        rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
        return bool(np.all(rgb == rgb[:, :1]))
    return False


def _pixels(path: Path, grey: bool) -> np.ndarray:
    """Decode one image to float32 (C, H, W) in [-1, 1] with 1 (grey) or 3 (RGB) channels."""
    img = _open(path)
    try:
        with img:
            img.load()
            img = ImageOps.exif_transpose(img)  # phone / dermoscope JPEGs store rotation in EXIF
            if _is_grey(img) and img.mode not in ("P", "PA", "1", "LA", "La"):
                array = np.asarray(img)
                if array.ndim == 3:
                    array = array[..., 0]
                if img.mode.startswith("I;16"):
                    lo_hi = (0.0, 65535.0)  # 16-bit: scale by the dtype's range, not by 255
                elif img.mode == "I":  # PIL's 32-bit container, used for 16-bit PNG/TIFF
                    in_16 = array.min() >= 0 and array.max() <= 65535
                    lo_hi = (0.0, 65535.0) if in_16 else (float(array.min()), float(array.max()) or 1.0)
                elif img.mode == "F":
                    lo, hi = float(array.min()), float(array.max())
                    lo_hi = (0.0, 1.0) if lo >= 0 and hi <= 1 else (lo, hi if hi > lo else lo + 1)
                else:
                    lo_hi = (0.0, 255.0)
                out = normalize(array, lo_hi)[None]
            else:
                converted = img.convert("L" if _is_grey(img) else "RGB")
                out = normalize(np.asarray(converted), (0.0, 255.0))
                out = out[None] if out.ndim == 2 else np.moveaxis(out, -1, 0)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # truncated / corrupt payloads surface on load()
        raise DataError(path, f"corrupt or truncated image ({' '.join(str(exc).split())})") from exc
    if grey and out.shape[0] == 3:
        out = (0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2])[None].astype(np.float32)  # ITU-R 601 luma
    elif not grey and out.shape[0] == 1:
        out = np.repeat(out, 3, axis=0)
    return out


def _mask_pixels(path: Path) -> np.ndarray:
    img = _open(path)
    try:
        with img:
            img.load()
            img = ImageOps.exif_transpose(img)
            array = np.asarray(img if _is_grey(img) and img.mode not in ("P", "PA") else img.convert("L"))
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(path, f"corrupt or truncated mask image ({' '.join(str(exc).split())})") from exc
    return array[..., 0] if array.ndim == 3 else array


def list_files(root: Path) -> list[Path]:
    """Every non-hidden file under ``root``, sorted (deterministic order = deterministic splits)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def read_image_folder(
    root: Path,
    files: list[Path],
    *,
    size: int | None = None,
    split: str = "train",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> RawData:
    """Read the image files ``files`` (found under ``root``) following the module's layout rules."""
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

    groups = Counter(e.group for e in images)
    use_labels = "" not in groups and len(groups) >= 2 and max(groups.values()) > 1
    class_names = tuple(sorted(groups)) if use_labels else ()
    labels = np.asarray([class_names.index(e.group) for e in images], dtype=np.int64) if use_labels else None

    # Header-only scan of every file (cheap): finds corrupt files up front, and fixes one channel count and
    # one size for all splits alike.
    shapes, grey_votes = [], 0
    for entry in images:
        with _open(entry.path) as img:
            shapes.append((img.height, img.width))
            grey_votes += _is_grey(img)
    grey = grey_votes > len(images) - grey_votes
    if 0 < grey_votes < len(images):
        target = "grey" if grey else "RGB"
        warnings.warn(
            f"{root}: {grey_votes} grey and {len(images) - grey_votes} colour images; all converted to "
            f"{target} (the majority)",
            stacklevel=2,
        )
    side = size or common_side(shapes)

    idx = split_indices(
        len(images),
        split,
        source=root,
        labels=labels,
        splits=np.asarray([e.split for e in images]) if split_mode else None,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    selected = range(len(images)) if idx is None else idx.tolist()
    if not selected:
        raise DataError(root, f"split '{split}' is empty ({len(images)} images in all); use split='all'")

    out_images, out_masks, meta = [], [], []
    for i in selected:
        entry = images[i]
        pixels = _pixels(entry.path, grey)
        out_images.append(fit_square(pixels, side))
        info = {"path": str(entry.path)}
        if entry.mask is not None:
            mask = _mask_pixels(entry.mask)
            if mask.shape != pixels.shape[1:]:
                raise DataError(
                    entry.mask,
                    f"is {mask.shape[1]}x{mask.shape[0]} px but its image {entry.path.name} "
                    f"is {pixels.shape[2]}x{pixels.shape[1]} px",
                )
            out_masks.append(preprocess_masks(mask[None], side)[0, 0].numpy() > 0.5)
            info["mask_path"] = str(entry.mask)
        if entry.split:
            info["split"] = entry.split
        meta.append(info)

    return RawData(
        source=str(root),
        images=out_images,
        labels=None if labels is None else labels[list(selected)],
        masks=out_masks or None,
        meta=meta,
        class_names=class_names,
        num_classes=len(class_names),
        channel_names=() if grey else ("red", "green", "blue"),
        split_name=split,
    )
