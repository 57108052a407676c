"""Paired (``image`` -> ``target``) and unpaired (domain A, domain B) image data.

Paired data come three ways, all held as one :class:`~synthmed.data.dataset.ImageDataset` whose ``targets`` are
filled (its spec is kind ``paired``):

* **Two folders** (``source=images/``, ``target=masks/``): files are matched on a key taken from their names;
  the first rule that pairs every image uniquely wins: the exact file name (without extension); the name without
  the prefix and suffix that every file of its folder shares, cut at a ``_``/``-``/``.`` (DRIVE:
  ``21_training.tif``, ``21_manual1.gif`` and ``21_training_mask.gif`` all give ``21``); the leading ID before
  the first ``_``/``-``/``.``. ``match=REGEX`` replaces these rules: its first capture group (or the whole match)
  of a file name's stem is the key. Sub-folders must be the same on both sides (they are part of the key). An
  optional ``fov=`` folder (DRIVE's field-of-view masks), matched the same way, becomes ``mask``.
  A target folder of grey images with at most two values each (``0``/``255`` vessel trees, lesion masks) is read
  as masks (``target_masks=None``: decided on up to 8 files spread over the folder; force it with ``True`` /
  ``False``); with ``mask_values="labels"`` it is always read as label maps.
* **One source, its masks as targets**: ``pair="image:mask"`` (an npz with masks, a folder with ``_mask`` files);
  ``"mask:image"`` turns it round (the mask, scaled to {-1, 1}, is the input image).
* **Channels of one array**: ``pair="A:B"``, each side channel names or indices, or comma lists of them
  (LGG: ``"pre-contrast:post-contrast"``, ``"0:2"``, ``"0,1:2"``).

Values: ``image`` is float32 (N, C, H, W) in [-1, 1]; ``target`` too, except a **mask target**, which stays as
masks are everywhere in the package: float32 (N, 1, H, W) in {0, 1} (``DataInfo.target_is_mask``, target name
``mask``). ``mask`` (fov or the source's masks) is {0, 1}; ``label`` int64 where the source has labels.

**Label maps** (multi-class segmentation, data option ``mask_values="labels"``, CLI ``--mask-values labels``):
the mask target's whole values are class indices (0 = background), kept as they are (nearest-neighbour resize
only), as float32 (N, 1, H, W) class indices; ``DataInfo.mask_classes`` is the largest label found over every
file or row of the source (every split, so the count never depends on the split) + 1, at least 2. Colour,
non-integer or negative masks are refused, naming the file, and so are masks of only 0 and 255 (binary masks).
It applies to a target folder (always read as masks then) and to ``pair="image:mask"``. In the default
``mask_values="binary"``, mask targets whose values look like a label map are refused (a segmentation target
must not silently lose its classes): whole values >= 0, all below 32
(:data:`~synthmed.data.transforms.LABEL_MAP_LIMIT`), more than two distinct ones over the set. 0/255 masks,
JPEG noise and anti-aliased edges around them reach above 32 and are binarised as before; so are grey-level
or probability masks (non-integer values).
An image and its target always get the same crop and resize, and the split is made once, on the pairs: by
patient where ids exist (npz ``patient_key``, folders whose first-level sub-folders are patients), so an image
and its target never land in different splits.

Intensities: ``info.intensity`` records how the images' stored values became [-1, 1] and ``info.target_intensity``
the targets' (kind ``mask`` for mask targets and for the mask input of ``"mask:image"``; with ``pair="A:B"`` both
sides share the source's mapping), see :mod:`synthmed.data.intensity`.

Unpaired data (CycleGAN) are an :class:`~synthmed.data.sets.UnpairedSet`: domain A (``image``) from ``source``
and domain B (``target``) from ``target``, each split by patient where ids exist, of any sizes, sampled
independently; or both from one source with ``pair="A:B"`` (or ``"image:mask"``), where the patients of the
chosen split are divided into two seeded halves, so that no patient gives images to both domains.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.data import load_dataset
from synthmed.data._core import SPLIT_ALIASES, common_side, mask_targets, non_finite_problem, split_indices
from synthmed.data.dataset import DataInfo, ImageDataset
from synthmed.data.folder import (
    FOLDER_GROUPS,
    IMAGE_FORMATS,
    _is_16bit,
    _is_grey,
    _label_pixels,
    _mask_peaks,
    _mask_pixels,
    _open,
    _pixels,
    folder_scaling,
    label_classes,
    list_files,
)
from synthmed.data.intensity import IntensityMapping, check_intensity_range
from synthmed.data.normalize import check_normalize, normalize_images, recorded
from synthmed.data.sets import TensorSet, UnpairedSet
from synthmed.data.transforms import (
    check_mask_values,
    distinct_levels,
    fit_mask,
    fit_square,
    label_map_levels,
    label_map_message,
    mask_threshold,
    parse_channels,
)
from synthmed.errors import ConfigError, DataError

__all__ = ["image_option_defaults", "load_paired", "load_unpaired", "refuse_options"]

RGB = ("red", "green", "blue")
_SEPARATORS = "_-. "
_IMAGE_WORDS = ("image", "images")
_MASK_WORDS = ("mask", "masks")
MASK_SAMPLE = 8  # target files read to decide "masks or images" (spread over the sorted folder)
MASK_INTENSITY = IntensityMapping("mask", 0.0, 1.0, dtype="uint8").to_dict()  # {0, 1} masks, written as 0 / 255


def image_option_defaults() -> dict[str, Any]:
    """The image options (:func:`~synthmed.data.load_dataset`'s keyword arguments) with their defaults."""
    params = inspect.signature(load_dataset).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def refuse_options(options: dict[str, Any], allowed: set[str] | frozenset[str], what: str) -> None:
    """Raise one :class:`ConfigError` line for an unknown option, or an image option that ``what`` cannot use
    given with a value other than its default (so a silently ignored ``size=64`` never surprises anyone).

    Args:
        options: the keyword options received.
        allowed: the option names ``what`` uses.
        what: the data described, for the message (``"records"``).
    """
    defaults = image_option_defaults()
    for name, value in options.items():
        if name not in defaults:
            raise ConfigError(f"unknown data option {name!r}; options: {', '.join(sorted(defaults))}")
        if name not in allowed and _differs(value, defaults[name]):
            raise ConfigError(f"{name}={value!r} does not apply to {what}")


def _differs(value: Any, default: Any) -> bool:
    try:
        return bool(value != default)
    except (ValueError, TypeError):  # arrays compare element-wise: anything but the default differs
        return True


# ---------------------------------------------------------------------------------------------- pair="A:B"


def _parse_pair(pair: str) -> tuple[str, str]:
    parts = str(pair).split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ConfigError(
            f"pair={pair!r}: expected 'A:B', channel names or indices (each side may be a comma list, e.g. "
            "'pre-contrast:post-contrast', '0:2'), or 'image:mask'"
        )
    return parts[0].strip(), parts[1].strip()


def _role(word: str) -> str | None:
    low = word.lower()
    return "image" if low in _IMAGE_WORDS else "mask" if low in _MASK_WORDS else None


@dataclass
class _Side:
    """One side of a pair: its tensor, channel names, and whether it is a {0, 1} mask."""

    tensor: torch.Tensor
    names: tuple[str, ...]
    is_mask: bool = False
    intensity: dict[str, Any] = field(default_factory=dict)  # how its values came from the stored ones


def _sides(ds: ImageDataset, pair: str, source: Any) -> tuple[_Side, _Side, bool]:
    """The image and target sides ``pair`` takes from one loaded source, and whether its masks were used."""
    a, b = _parse_pair(pair)
    roles = (_role(a), _role(b))
    if roles[0] or roles[1]:
        if set(roles) != {"image", "mask"}:
            raise ConfigError(f"pair={pair!r}: use 'image:mask' or 'mask:image', or channel names/indices 'A:B'")
        if ds.masks is None:
            raise DataError(
                source,
                f"has no masks for pair={pair!r} (npz: an array named 'masks' or mask_key=...; image folders: "
                "NAME_mask.png files beside the images)",
            )
        image = _Side(ds.images, ds.info.channel_names, intensity=dict(ds.info.intensity))
        mask = _Side(ds.masks, ("mask",), is_mask=True, intensity=dict(MASK_INTENSITY))
        if roles[0] == "image":
            return image, mask, True
        # Mask -> image: the input is scaled to {-1, 1}, as every ``image`` lies in [-1, 1].
        return _Side(ds.masks * 2.0 - 1.0, ("mask",), intensity=dict(MASK_INTENSITY)), image, True
    names = ds.info.channel_names
    count = int(ds.images.shape[1])
    pick_a = parse_channels(a, count, names) or []
    pick_b = parse_channels(b, count, names) or []
    shared = sorted(set(pick_a) & set(pick_b))
    if shared:
        raise ConfigError(f"pair={pair!r} puts channel {shared[0]} on both sides; image and target must differ")

    def side(picked: list[int]) -> _Side:
        index = torch.as_tensor(picked, dtype=torch.int64)
        return _Side(ds.images.index_select(1, index), tuple(names[i] for i in picked) if names else (),
                     intensity=dict(ds.info.intensity))  # one source: both sides were read one way

    return side(pick_a), side(pick_b), False


def _paired_info(info: DataInfo, image: _Side, target: _Side, **extra: Any) -> DataInfo:
    return replace(
        info, channels=int(image.tensor.shape[1]), channel_names=image.names, kind="paired",
        target_channels=int(target.tensor.shape[1]), target_names=target.names, target_is_mask=target.is_mask,
        intensity=dict(image.intensity), target_intensity=dict(target.intensity), **extra,
    )


# ---------------------------------------------------------------------------------- matching files by name


def _strip_affixes(stems: list[str]) -> list[str]:
    """Stems without the suffix and prefix that all of them share, cut at a separator (``_training``,
    ``img_``), as long as no stem becomes empty."""
    suffix = os.path.commonprefix([s[::-1] for s in stems])[::-1]
    start = next((i for i, ch in enumerate(suffix) if ch in _SEPARATORS), None)
    suffix = "" if start is None else suffix[start:]
    if suffix and all(len(s) > len(suffix) for s in stems):
        stems = [s[: -len(suffix)] for s in stems]
    common = os.path.commonprefix(stems)
    end = max((i for i, ch in enumerate(common) if ch in _SEPARATORS), default=-1)
    prefix = common[: end + 1]
    if prefix and all(len(s) > len(prefix) for s in stems):
        stems = [s[len(prefix) :] for s in stems]
    return stems


def _leading_id(stems: list[str]) -> list[str]:
    return [re.split(r"[_\-. ]", s, maxsplit=1)[0] or s for s in stems]


_RULES: tuple[tuple[str, Callable[[list[str]], list[str | None]]], ...] = (
    ("exact name", lambda stems: list(stems)),
    ("name without shared prefix/suffix", _strip_affixes),
    ("leading ID", _leading_id),
)


def _regex_rule(match: str) -> Callable[[list[str]], list[str | None]]:
    try:
        pattern = re.compile(match)
    except re.error as exc:
        raise ConfigError(f"match={match!r} is not a valid regular expression ({exc})") from exc

    def keys(stems: list[str]) -> list[str | None]:
        found = [pattern.search(s) for s in stems]
        return [None if m is None else (m.group(1) if pattern.groups else m.group(0)) for m in found]

    return keys


def _keys(files: list[Path], root: Path, rule: Callable[[list[str]], list[str | None]]) -> list[Any]:
    """One key per file: its sub-folder (relative to ``root``) and the rule's key of its stem."""
    rels = [f.relative_to(root) for f in files]
    stems = rule([r.stem for r in rels])
    return [None if k is None else (r.parent.as_posix(), k) for r, k in zip(rels, stems, strict=True)]


def _repeated(keys: list[Any], files: list[Path]) -> tuple[Path, Path] | None:
    seen: dict[Any, Path] = {}
    for key, path in zip(keys, files, strict=True):
        if key is None:
            continue
        if key in seen:
            return seen[key], path
        seen[key] = path
    return None


def _pair_files(
    images: list[Path], image_root: Path, others: list[Path], other_root: Path, match: str | None, role: str
) -> list[Path]:
    """The file of ``others`` that goes with each image (see the module docstring for the rules)."""
    rules = (("match", _regex_rule(match)),) if match else _RULES
    best: tuple[int, Path] | None = None
    clash: tuple[Path, Path] | None = None
    for _, rule in rules:
        image_keys, other_keys = _keys(images, image_root, rule), _keys(others, other_root, rule)
        twice = _repeated(image_keys, images) or _repeated(other_keys, others)
        if twice and match:
            raise DataError(twice[1].parent, f"{twice[0].name} and {twice[1].name} give the same key with "
                                             f"match={match!r}; the key must identify one file per folder")
        if twice:
            clash = clash or twice
            continue  # this rule does not tell files apart (e.g. a leading ID shared by many files)
        lookup = {k: p for k, p in zip(other_keys, others, strict=True) if k is not None}
        found = [lookup.get(k) if k is not None else None for k in image_keys]
        missing = [p for p, f in zip(images, found, strict=True) if f is None]
        if not missing:
            unused = sorted(set(others) - set(found))  # type: ignore[arg-type]
            if unused:
                warnings.warn(f"{other_root}: {len(unused)} {role} file(s) match no image in {image_root}, e.g. "
                              f"{unused[0].name}; they are left out", stacklevel=4)
            return found  # type: ignore[return-value]
        if best is None or len(missing) < best[0]:
            best = (len(missing), missing[0])
    how = f"match={match!r}" if match else "exact name, name without shared prefix/suffix, leading ID"
    hint = "" if match else "; pass match=REGEX whose first group is the shared key (e.g. match=r'^(\\d+)_')"
    if best is None and clash is not None:
        raise DataError(image_root, f"cannot pair files with {other_root}: names such as {clash[0].name} and "
                                    f"{clash[1].name} give the same key ({how}){hint}")
    count, example = best if best is not None else (len(images), images[0])
    raise DataError(image_root, f"{count} of {len(images)} images lack a {role} file in {other_root}, e.g. "
                                f"{example.relative_to(image_root)} (matched by {how}){hint}")


# ------------------------------------------------------------------------------------------ paired folders


def _folder(path: str | Path, what: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DataError(folder, "no such file or folder")
    if not folder.is_dir():
        raise DataError(folder, f"is a file; the {what} of paired folders must be a folder of images "
                                "(for the channels of one array pass pair='A:B' instead)")
    return folder


def _image_files(root: Path) -> list[Path]:
    files = [p for p in list_files(root) if p.suffix.lower() in IMAGE_FORMATS]
    if not files:
        raise DataError(root, "contains no images (PNG, JPEG, TIFF, BMP, GIF)")
    return files


def _scan(paths: list[Path]) -> tuple[list[tuple[int, int]], bool, list[Path], int]:
    """Header-only scan: every size, grey or colour (the majority), the 16-bit files, the number of float files."""
    shapes, grey_votes, sixteen, floats = [], 0, [], 0
    for path in paths:
        with _open(path) as img:
            shapes.append((img.height, img.width))
            grey_votes += _is_grey(img)
            floats += img.mode == "F"
            if _is_16bit(img):
                sixteen.append(path)
    return shapes, grey_votes > len(paths) - grey_votes, sixteen, floats


def _looks_like_masks(paths: list[Path]) -> bool:
    """Grey files with at most two values each (0/255 vessel trees, lesion masks), judged on a few files spread
    over the sorted folder, so the answer does not depend on the split. When every sampled file has whole values
    below 32 and one has more than two, the folder is a label map and refused (load it with
    ``mask_values="labels"``); a single dark image among them (values 0..2) does not make a label map."""
    picks = sorted({round(i * (len(paths) - 1) / max(MASK_SAMPLE - 1, 1)) for i in range(MASK_SAMPLE)})
    label_map: tuple[Path, np.ndarray] | None = None
    for i in picks:
        with _open(paths[i]) as img:
            if not _is_grey(img):
                return False
        pixels = _mask_pixels(paths[i])
        if np.unique(pixels).size > 2:
            levels = label_map_levels(pixels)
            if levels is None:
                return False  # grey levels: images
            label_map = label_map or (paths[i], levels)
    if label_map is not None:
        raise DataError(label_map[0], label_map_message(label_map[1]) + " (or target_masks=False for images)")
    return True


def _read_image(path: Path, grey: bool, range16: tuple[float, float], side: int,
                float_range: tuple[float, float] | None = None) -> np.ndarray:
    pixels = _pixels(path, grey, range16, float_range)
    if not np.isfinite(pixels).all():  # float TIFFs: a NaN would spread through the resize
        raise DataError(path, non_finite_problem("the image", pixels))
    return fit_square(pixels, side)


def _binarised(masks: list[np.ndarray], others: list[Path], read_paths: list[Path] | None = None) -> torch.Tensor:
    """{0, 1} masks (N, 1, H, W); the foreground threshold comes from every file of the folder, not one split.

    Args:
        masks: the masks read (the selected split).
        others: the folder's other mask files.
        read_paths: the files of ``masks`` when they are targets: a label map is then refused (see
            :func:`~synthmed.data.folder._mask_peaks`).
    """
    peaks = _mask_peaks(masks, others, read_paths)
    out = np.stack([m > mask_threshold(m[:0], peak=peaks[m.dtype]) for m in masks])
    return torch.from_numpy(out.astype(np.float32))[:, None]


def _check_shapes(images: list[Path], shapes: list[tuple[int, int]], others: list[Path], role: str) -> None:
    for image, shape, other in zip(images, shapes, others, strict=True):
        with _open(other) as img:
            found = (img.height, img.width)
        if found != shape:
            raise DataError(other, f"is {found[1]}x{found[0]} px but its image {image.name} is "
                                   f"{shape[1]}x{shape[0]} px; a {role} must be the size of its image")


@dataclass
class _Scaling:
    """How one folder's images are read: grey or RGB, the 16-bit range, the float range, the mapping."""

    grey: bool
    range16: tuple[float, float]
    float_range: tuple[float, float] | None
    intensity: dict[str, Any]


def _scalings(image_root: Path, target_root: Path, images: tuple[int, bool, list[Path], int],
              targets: tuple[int, bool, list[Path], int] | None, stated: Any,
              stated_target: Any = None) -> tuple[_Scaling, _Scaling]:
    """Both sides' scaling from their scans (count, grey, 16-bit files, float count; ``targets`` ``None`` for
    masks). A stated ``intensity_range`` applies to each side's 16-bit and float images; an 8-bit side keeps
    0..255, and the range is refused when neither side can use it."""
    stated = check_intensity_range(stated)
    per_side = (stated, check_intensity_range(stated_target) or stated)
    sides = []
    for root, scan, side_range in ((image_root, images, per_side[0]), (target_root, targets, per_side[1])):
        if scan is None:
            sides.append(_Scaling(True, (0.0, 65535.0), None, dict(MASK_INTENSITY)))
            continue
        count, grey, sixteen, floats = scan
        uses = side_range if (sixteen or floats) else None
        range16, intensity = folder_scaling(root, count, sixteen, floats, grey, uses)
        sides.append(_Scaling(grey, range16, uses, intensity))
    if (stated is not None or stated_target is not None) and sides[0].float_range is None and \
            sides[1].float_range is None:
        raise ConfigError(f"intensity_range={stated!r} applies to 16-bit and float images; {image_root} and "
                          f"{target_root} hold 8-bit images (always scaled 0..255) or masks")
    return sides[0], sides[1]


def _read_target(path: Path, side: int, scale: _Scaling | None, found: dict[Path, np.ndarray] | None) -> np.ndarray:
    """One target file fitted to ``side``: an image scaled by ``scale``, else a mask with its values kept
    (binarised later, one rule for the set), or a checked label map when ``found`` records label values.

    Args:
        path: the target file.
        side: the output side.
        scale: the target folder's scaling when its files are images; ``None`` for masks.
        found: label maps: where to record the file's distinct values (full size); ``None`` otherwise.
    """
    if scale is not None:
        return _read_image(path, scale.grey, scale.range16, side, scale.float_range)
    if found is None:
        return fit_mask(_mask_pixels(path), side)
    label_map = _label_pixels(path)
    found[path] = distinct_levels(label_map)
    return fit_mask(label_map, side)  # nearest neighbour: class indices stay as they are


def _labels_kept(mask_values: str, target_masks: bool | None) -> bool:
    """Whether a target folder is read as label maps (``mask_values="labels"``, which makes it masks)."""
    if check_mask_values(mask_values) == "labels" and target_masks is False:
        raise ConfigError("target_masks=False reads the targets as images, mask_values='labels' as label maps; "
                          "give one of them")
    return mask_values == "labels"


def _paired_folders(
    source: str | Path, target: str | Path, fov: str | Path | None, match: str | None,
    target_masks: bool | None, options: dict[str, Any], target_intensity_range: Any = None,
) -> ImageDataset:
    opts = {**image_option_defaults(), **options}
    folder_groups = opts["folder_groups"]
    if folder_groups not in FOLDER_GROUPS:
        raise ConfigError(f"folder_groups={folder_groups!r}: choose one of {', '.join(FOLDER_GROUPS)}")
    image_root, target_root = _folder(source, "source"), _folder(target, "target")
    if image_root.resolve() == target_root.resolve():
        raise ConfigError(f"{image_root} is both source and target; for masks beside the images (NAME_mask.png) "
                          "pass pair='image:mask'")
    images = _image_files(image_root)
    targets = _pair_files(images, image_root, _image_files(target_root), target_root, match, "target")
    fov_root = None if fov is None else _folder(fov, "field-of-view folder")
    fovs = None if fov_root is None else _pair_files(images, image_root, _image_files(fov_root), fov_root, match,
                                                     "field-of-view")

    # Layout as image folders have it: split folders first, then a first-level folder per class or patient.
    rels = [p.relative_to(image_root).parts for p in images]
    first = {parts[0].lower() for parts in rels if len(parts) > 1}
    split_mode = all(len(p) > 1 for p in rels) and bool(first) and first <= set(SPLIT_ALIASES)
    depth = 1 if split_mode else 0
    groups = [parts[depth] if len(parts) > depth + 1 else "" for parts in rels]
    counts = Counter(groups)
    labels, class_names, patients = None, (), None
    if folder_groups == "class":
        if "" not in counts and len(counts) >= 2 and max(counts.values()) > 1:
            class_names = tuple(sorted(counts))
            labels = np.asarray([class_names.index(g) for g in groups], dtype=np.int64)
    elif folder_groups == "patient" or any(groups):
        # Paired folders with sub-folders hold one folder per case (segmentation data): patients by default.
        patients = np.asarray([g or p.stem for g, p in zip(groups, images, strict=True)], dtype=str)

    shapes, *image_scan = _scan(images)
    _check_shapes(images, shapes, targets, "target")
    if fovs is not None:
        _check_shapes(images, shapes, fovs, "field-of-view mask")
    labels_kept = _labels_kept(opts["mask_values"], target_masks)
    as_masks = labels_kept or (_looks_like_masks(targets) if target_masks is None else bool(target_masks))
    target_scan = None if as_masks else (len(targets), *_scan(targets)[1:])
    scale, target_scale = _scalings(image_root, target_root, (len(images), *image_scan), target_scan,
                                    opts["intensity_range"], target_intensity_range)
    grey = scale.grey
    size = opts["size"]
    side = int(size) if size else common_side(shapes)

    split = opts["split"]
    idx = split_indices(
        len(images), split, source=image_root, labels=labels, patients=patients,
        splits=np.asarray([SPLIT_ALIASES[p[0].lower()] for p in rels]) if split_mode else None,
        seed=opts["seed"], val_fraction=opts["val_fraction"], test_fraction=opts["test_fraction"],
    )
    selected = list(range(len(images))) if idx is None else idx.tolist()
    if not selected:
        raise DataError(image_root, f"split '{split}' is empty ({len(images)} pairs in all); use split='all'")
    rest = sorted(set(range(len(images))) - set(selected))

    image_out, target_out, fov_out, meta = [], [], [], []
    found: dict[Path, np.ndarray] = {}  # label maps: each target file's distinct values, at full size
    for i in selected:
        image_out.append(_read_image(images[i], grey, scale.range16, side, scale.float_range))
        target_out.append(_read_target(targets[i], side, target_scale if not as_masks else None,
                                       found if labels_kept else None))
        info = {"path": str(images[i]), "target_path": str(targets[i])}
        if fovs is not None:
            fov_out.append(fit_mask(_mask_pixels(fovs[i]), side))
            info["mask_path"] = str(fovs[i])
        if split_mode:
            info["split"] = SPLIT_ALIASES[rels[i][0].lower()]
        meta.append(info)

    image_tensor = torch.from_numpy(np.stack(image_out))
    names = () if grey else RGB
    picked = parse_channels(opts["channels"], int(image_tensor.shape[1]), names)
    if picked is not None:  # channels pick the image side; the target keeps its own
        image_tensor = image_tensor[:, picked].contiguous()
        names = tuple(names[i] for i in picked) if names else ()
    mask_classes = 0
    if labels_kept:
        mask_classes = label_classes(found, [targets[i] for i in rest])  # every split's files: one class count
        target_tensor = torch.from_numpy(np.stack(target_out).astype(np.float32))[:, None]
        target_names: tuple[str, ...] = ("mask",)
    elif as_masks:
        target_tensor = _binarised(target_out, [targets[i] for i in rest], [targets[i] for i in selected])
        target_names = ("mask",)
    else:
        target_tensor = torch.from_numpy(np.stack(target_out))
        target_names = () if target_scale.grey else RGB
    fov_tensor = None if fovs is None else _binarised(fov_out, [fovs[i] for i in rest])
    chosen = None if patients is None else patients[selected]
    mode = check_normalize(opts["normalize"])  # both sides when the targets are images; masks never
    image_tensor = normalize_images(image_tensor, mode, chosen)
    intensity, target_intensity = recorded(scale.intensity, mode), target_scale.intensity
    if not as_masks:
        target_tensor = normalize_images(target_tensor, mode, chosen)
        target_intensity = recorded(target_intensity, mode)
    info = DataInfo(
        source=str(image_root), channels=int(image_tensor.shape[1]), height=side, width=side,
        num_classes=len(class_names), class_names=class_names, split=split, channel_names=names, kind="paired",
        target_channels=int(target_tensor.shape[1]), target_names=target_names, target_is_mask=as_masks,
        target_source=str(target_root), intensity=intensity, target_intensity=target_intensity,
        mask_classes=mask_classes,
    )
    return ImageDataset(
        images=image_tensor, info=info, targets=target_tensor, masks=fov_tensor,
        labels=None if labels is None else torch.as_tensor(labels[selected]),
        patients=chosen, meta=meta,
    )


# ---------------------------------------------------------------------------------------------- public API


def _one_source(source: Any, pair: str, options: dict[str, Any]) -> ImageDataset:
    """Load one source for ``pair``: all channels when the pair picks channels (so both sides share one load:
    one split, one normalisation, one crop and resize). Masks taken as targets refuse label maps read as
    binary (:func:`~synthmed.data._core.mask_targets`)."""
    a, b = _parse_pair(pair)
    if _role(a) is None and _role(b) is None and options.get("channels") is not None:
        raise ConfigError(f"channels={options['channels']!r} and pair={pair!r} both choose channels; "
                          "give them in pair only")
    if check_mask_values(options.get("mask_values", "binary")) == "labels" and (_role(a), _role(b)) != (
            "image", "mask"):
        raise ConfigError(f"mask_values='labels' makes the source's masks label-map targets: use pair='image:mask' "
                          f"(got pair={pair!r})")
    if _role(a) is None and _role(b) is None:
        return load_dataset(source, **options)
    with mask_targets():
        return load_dataset(source, **options)


def load_paired(
    source: str | Path | None,
    *,
    target: str | Path | None = None,
    pair: str | None = None,
    match: str | None = None,
    fov: str | Path | None = None,
    target_masks: bool | None = None,
    target_intensity_range: tuple[float, float] | None = None,
    **options: Any,
) -> ImageDataset:
    """Paired data: batches hold ``image`` -> ``target`` (+ ``mask``, ``label`` where present).

    See the module docstring for the matching rules and value ranges. The result is an :class:`ImageDataset`
    with ``targets`` filled; its ``info`` has ``kind="paired"``, ``target_channels``, ``target_names``,
    ``target_is_mask`` and (two folders) ``target_source``.

    Args:
        source: a folder of images (with ``target``), or any source of :func:`~synthmed.data.load_dataset`
            (with ``pair``).
        target: the folder of targets, matched to the images by file name.
        pair: ``"image:mask"`` / ``"mask:image"`` (the source's masks), or ``"A:B"`` channel groups of one array.
        match: with ``target``: a regular expression whose first group (or whole match) in a file's stem is
            the key shared by an image and its target (and fov mask), e.g. ``r"^(\\d+)_"`` for DRIVE.
        fov: with ``target``: a folder of field-of-view masks matched the same way; they become ``mask``.
        target_masks: with ``target``: read targets as {0, 1} masks (``True``), as images in [-1, 1]
            (``False``), or decide (``None``: grey files with at most two values are masks). The option
            ``mask_values="labels"`` reads them as label maps instead (class indices, ``info.mask_classes``).
        options: image options of :func:`~synthmed.data.load_dataset` (``size``, ``split``, ``channels``,
            ``seed``, ...). With ``target``, ``channels`` picks the image's channels and the npz / download
            options do not apply; with ``pair="A:B"`` the pair picks the channels. ``intensity_range`` applies to
            the 16-bit and float images of both folders (an 8-bit side keeps 0..255; mask targets are masks);
            so does ``normalize`` (per patient / image, :mod:`synthmed.data.normalize`), to image targets too.
        target_intensity_range: with ``target``: the target folder's own ``intensity_range`` (e.g. CT in HU
            beside MR in scanner units); default: ``intensity_range``.

    Raises:
        ConfigError: neither or both of ``target`` and ``pair``; options that do not apply;
            ``mask_values="labels"`` with a pair other than ``"image:mask"``.
        DataError: unmatched files (naming the folder and an example), sizes that differ within a pair,
            a source without masks for ``"image:mask"``, mask targets that are a label map read as binary, or
            label maps with non-integer, negative or colour values (naming the file).
    """
    refuse_options(options, frozenset(image_option_defaults()), "paired data")
    if (target is None) == (pair is None):
        raise ConfigError("paired data need target=FOLDER (files matched by name) or pair='A:B' / 'image:mask' "
                          f"(one of them, got {'both' if target is not None else 'neither'})")
    if target is not None:
        if source is None:
            raise ConfigError("paired folders need a source folder of images beside target=")
        allowed = {"size", "split", "channels", "seed", "val_fraction", "test_fraction", "folder_groups",
                   "intensity_range", "mask_values", "normalize"}
        refuse_options(options, allowed, "paired image folders")
        return _paired_folders(source, target, fov, match, target_masks, options, target_intensity_range)
    if match is not None or fov is not None or target_masks is not None or target_intensity_range is not None:
        raise ConfigError("match=, fov=, target_masks= and target_intensity_range= apply to a target folder, not to "
                          "pair= (one source has one intensity mapping)")
    ds = _one_source(source, str(pair), options)
    image, target_side, used_masks = _sides(ds, str(pair), source)
    return ImageDataset(
        images=image.tensor, info=_paired_info(ds.info, image, target_side), labels=ds.labels,
        masks=None if used_masks else ds.masks, targets=target_side.tensor, patients=ds.patients, meta=ds.meta,
    )


def _halves(ds: ImageDataset, seed: int, source: Any) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two disjoint halves of ``ds``'s patients (or images, without ids), seeded."""
    if ds.patients is None:
        warnings.warn(f"{source}: no patient ids, so the unpaired domains are split per image; images of one "
                      "patient may appear in both domains (give patient ids, e.g. npz patient_key=...)", stacklevel=3)
        units = np.arange(len(ds)).astype(str)
    else:
        units = np.asarray(ds.patients).astype(str)
    unique = np.unique(units)  # sorted: independent of row order
    if len(unique) < 2:
        unit = "image" if ds.patients is None else "patient"
        raise DataError(source, f"split '{ds.info.split}' has {len(unique)} {unit}; unpaired domains from one "
                                f"source need at least 2 (each domain its own {unit}s)")
    # A stream of its own, so the halves do not repeat the permutation that made the split.
    order = np.random.default_rng([seed, 1]).permutation(len(unique))
    in_a = np.isin(units, unique[order[: (len(unique) + 1) // 2]])
    return np.flatnonzero(in_a), np.flatnonzero(~in_a)


def _domain(ds: ImageDataset, tensor: torch.Tensor, key: str, idx: np.ndarray | None = None) -> TensorSet:
    if idx is None:
        return TensorSet({key: tensor}, ds.info, kind="images", patients=ds.patients, meta=list(ds.meta))
    index = torch.as_tensor(idx, dtype=torch.int64)
    return TensorSet(
        {key: tensor.index_select(0, index)}, ds.info, kind="images",
        patients=None if ds.patients is None else ds.patients[idx],
        meta=[ds.meta[i] for i in idx.tolist()] if ds.meta else [],
    )


def load_unpaired(
    source: str | Path | None,
    *,
    target: str | Path | None = None,
    pair: str | None = None,
    target_intensity_range: tuple[float, float] | None = None,
    **options: Any,
) -> UnpairedSet:
    """Unpaired data (CycleGAN): domain A as ``image``, domain B as ``target``, drawn independently.

    Two sources: domain A is ``source``, domain B is ``target`` (each any source of
    :func:`~synthmed.data.load_dataset`, each split by patient where ids exist, of any sizes; B is resized to
    A's side when ``size`` is not given). One source with ``pair="A:B"`` (channel groups) or
    ``"image:mask"``: the chosen split's **patients are divided into two disjoint, seeded halves**; domain A
    takes its channels from the first half, domain B from the second, so no patient contributes to both
    domains (without patient ids the images are halved instead, with a warning).
    Batches hold only ``image`` and ``target`` (labels and masks are left out: the domains share no rows).
    ``info`` has ``kind="unpaired"``, ``sizes`` = (len A, len B), ``target_channels``, ``target_names``.

    Args:
        source: domain A (or both domains, with ``pair``).
        target: domain B.
        pair: channel groups ``"A:B"`` (names or indices, comma lists) or ``"image:mask"`` of one source.
        options: image options of :func:`~synthmed.data.load_dataset`, used for both domains.

    Raises:
        ConfigError: neither or both of ``target`` and ``pair``.
        DataError: a source fails to load, or one split has fewer than 2 patients for two domains.
    """
    # Unpaired batches carry no labels (the domains share no rows), so a labels CSV could only fail on domain B.
    label_options = {"labels", "label_column", "label_map", "label_key_column"}
    refuse_options(options, frozenset(image_option_defaults()) - label_options, "unpaired data (it has no labels)")
    if (target is None) == (pair is None):
        raise ConfigError("unpaired data need target=FOLDER_OR_FILE (domain B) or pair='A:B' (channel groups of "
                          f"disjoint patients), one of them (got {'both' if target is not None else 'neither'})")
    if target is not None:
        if check_mask_values(options.get("mask_values", "binary")) == "labels":
            raise ConfigError("mask_values='labels' applies to mask targets; two unpaired sources carry no masks "
                              "(use pair='image:mask' for a source's label maps)")
        a = load_dataset(source, **options)
        b_range = options.get("intensity_range") if target_intensity_range is None else target_intensity_range
        b = load_dataset(target, **{**options, "size": options.get("size") or a.info.height,
                                    "intensity_range": b_range})
        domain_a, domain_b = _domain(a, a.images, "image"), _domain(b, b.images, "target")
        names_a, names_b, mask_b = a.info.channel_names, b.info.channel_names, False
        intensity_a, intensity_b = dict(a.info.intensity), dict(b.info.intensity)
        target_source = str(target)
        base = a.info
    else:
        ds = _one_source(source, str(pair), options)
        image, target_side, _ = _sides(ds, str(pair), source)
        idx_a, idx_b = _halves(ds, int(options.get("seed", 0)), source)
        domain_a, domain_b = _domain(ds, image.tensor, "image", idx_a), _domain(ds, target_side.tensor, "target",
                                                                                 idx_b)
        names_a, names_b, mask_b = image.names, target_side.names, target_side.is_mask
        intensity_a, intensity_b = dict(image.intensity), dict(target_side.intensity)
        target_source = ""
        base = ds.info
    info = replace(
        base, channels=int(domain_a.tensors["image"].shape[1]), channel_names=names_a, num_classes=0,
        class_names=(), kind="unpaired", target_channels=int(domain_b.tensors["target"].shape[1]),
        target_names=names_b, target_is_mask=mask_b, target_source=target_source,
        sizes=(len(domain_a), len(domain_b)), intensity=intensity_a, target_intensity=intensity_b,
    )
    return UnpairedSet(domain_a=domain_a, domain_b=domain_b, info=info)
