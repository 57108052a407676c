"""``synthmed segment``: a trained segmentation run (unet, segan, pix2pix-seg) applied to files, folders or its own
held-out split; one mask per input, and segmentation metrics against truth masks.

Inputs are read as :mod:`synthmed.translate` reads them (the run's intensity mapping, the input's own size;
tiles of the training size, blended, when larger; ``training_side`` resizes in and back out). The class
probabilities are blended and resized first and only then thresholded (binary: p >= 0.5) or their argmax taken,
so a tile seam or a resize never averages hard labels. A volume is segmented slice by slice along the axis the
run's data were sliced on.

Outputs, one per input, named by the input's stem (and sub-folder):

* 2-D inputs of every format but NIfTI: ``<stem>.png``, uint8: 0 / 255 (binary runs) or the label values
  0 .. K-1 (multi-class); a multi-frame DICOM gives a multi-page ``<stem>.tif``;
* NIfTI: ``<stem>.nii.gz``, a uint8 label volume (0 / 1, or 0 .. K-1) with the input's affine.

With truth masks (``compare``, matched to the inputs by file name as paired folders are) or the run's held-out
``split``: ``metrics.csv`` (one row per image and foreground class, :func:`synthmed.metrics.segmentation
.write_scores_csv`), ``metrics.json`` (per-image means, per-patient scores with a bootstrap interval of the mean
Dice, pooled scores, the empty-mask conventions, the run, the checkpoint, counts; ``null`` marks an undefined
value), ``overlays/<stem>.png`` for up to :data:`OVERLAYS` inputs spread over the set and ``overlays.jpg``, a
contact sheet of up to :data:`SHEET` of them. A volume (NIfTI, multi-frame DICOM) is one 3-D case.

Patients: ``split`` uses the data's patient ids; files are grouped by the first sub-folder of the input folder
when they lie in sub-folders (one folder per patient, as LGG's ``kaggle_3m``), else each file is its own patient.

Intensities: a run trained with the data option ``normalize="patient"`` normalises its inputs per patient as
above: the files of one first sub-folder together (all their pixels, per channel), a file outside sub-folders on
its own, so a patient's slices given as separate files in one flat folder are normalised one by one; a NIfTI
volume or multi-frame DICOM file as a whole. ``normalize="image"``: each 2-D image or slice on its own. The
``split`` path reads the run's data with the run's options, so it is normalised as in training.

Truth files: binary runs read them as the loaders read masks (0 / 255, 0 / 1; JPEG noise and anti-aliased edges
of 8-bit masks binarised at 127); a label map (more than two whole values below 32) is refused, naming the file.
Multi-class runs read label values, which must be whole numbers below the run's class count.

Everything is read and checked before anything is written, and the output folder appears whole or not at all.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.data.intensity import (
    PICTURE_FORMATS,
    ImageFile,
    IntensityMapping,
    normalize_files,
    read_image_file,
    write_image_file,
)
from synthmed.errors import ConfigError, DataError, SynthmedError
from synthmed.io import empty_output_folder, write_folder_atomically
from synthmed.metrics import segmentation as sm
from synthmed.recipes.base import SegmentationRecipe
from synthmed.translate import (
    _at_scale,
    check_same_size,
    file_stem,
    input_files,
    load_held_out,
    read_jobs,
    side_mappings,
    spread_indices,
    targets_for,
    translate_images,
)

#: Overlay pictures written under ``overlays/`` (spread over the inputs).
OVERLAYS = 16
#: Overlays in the ``overlays.jpg`` contact sheet.
SHEET = 8
#: Small images are enlarged (nearest neighbour, whole factors up to 8) to about this side in overlays.
OVERLAY_SIDE = 256
#: Opacity of the overlay colours.
ALPHA = 0.45
#: Overlay colours: predicted right, truth missed (or given another class), predicted on background.
AGREE, MISSED, EXTRA = (255, 255, 0), (0, 200, 0), (255, 0, 255)


@dataclass
class SegmentationResult:
    """What :func:`segment_files` / :func:`segment_split` wrote.

    Args:
        out: the output folder.
        outputs: one mask file per input.
        metrics: the ``metrics.json`` document (with truth masks), else empty.
        checkpoint: the checkpoint used, in words.
    """

    out: Path
    outputs: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = ""

    def summary_lines(self) -> list[str]:
        """A few lines for the terminal: Dice per image, per patient [interval] and pooled, per class."""
        lines = []
        for name, dice in self.metrics.get("dice", {}).items():
            label = "dice" if len(self.metrics["dice"]) == 1 else f"class {name} dice"
            interval = dice["per_patient_interval"]
            spread = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
            lines.append(f"{label}: per image {_number(dice['per_image'])} (n={self.metrics['counts']['images']}), "
                         f"per patient {_number(dice['per_patient'])}{spread} "
                         f"(n={self.metrics['counts']['patients']}), pooled {_number(dice['pooled'])}")
        lines.append(f"checkpoint: {self.checkpoint}")
        count = f"{len(self.outputs)} mask(s)"
        lines.append(f"wrote {count}{' and metrics' if self.metrics else ''} to {self.out}")
        return lines


def _number(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


# ------------------------------------------------------------------------------------------------ the run


def choose_checkpoint(run_dir: Path, checkpoint: str | Path | None) -> str | Path | None:
    """The checkpoint to segment with: the one given; by default ``best`` (kept by ``--eval-every``, selected on the
    validation Dice) when the run has one, else the latest (``None``; also for ``"latest"``)."""
    if checkpoint is None:
        return "best" if (run_dir / "checkpoints" / "best.json").is_file() else None
    return None if str(checkpoint) == "latest" else checkpoint


def describe_checkpoint(choice: str | Path | None, step: int) -> str:
    """The checkpoint of :func:`choose_checkpoint` in words, with its step."""
    if choice == "best":
        return f"best (step {step}, selected on the validation Dice)"
    return f"latest (step {step})" if choice is None else f"{choice} (step {step})"


def check_segmentation_run(recipe: Any, run_dir: Path) -> SegmentationRecipe:
    """The run's recipe if it segments images; a one-line error naming the run otherwise."""
    if not isinstance(recipe, SegmentationRecipe):
        raise SynthmedError(f"{run_dir}: recipe {getattr(recipe, 'name', '?')!r} does not segment images; "
                            "train --recipe unet, segan or pix2pix-seg (pix2pix runs: synthmed translate)")
    return recipe


def parse_spacing(spacing: str | Sequence[float] | None) -> tuple[float, ...] | None:
    """``"0.5,0.5"`` (rows, columns) or ``"3,0.5,0.5"`` (slices, rows, columns) in mm, checked; ``None`` passes."""
    if spacing is None:
        return None
    parts = spacing.split(",") if isinstance(spacing, str) else list(spacing)
    try:
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        values = ()
    if len(values) not in (2, 3) or not all(math.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"--spacing expects 2 (rows, columns) or 3 (slices, rows, columns) positive sizes in mm, "
                          f"e.g. 0.5,0.5; got {spacing!r}")
    return values


# ------------------------------------------------------------------------------------------------ predicting


def predict_labels(recipe: SegmentationRecipe, images: torch.Tensor, *, tile: int | None = None,
                   overlap: int | None = None, batch_size: int = 4, training_side: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Class indices (S, H, W) int64 of images (S, C, H, W) in [-1, 1] of any size.

    Args:
        recipe: a loaded segmentation recipe.
        images: the images (slices of a volume, or a batch).
        tile: tile side for images larger than it (default: the training size or crop).
        overlap: tile overlap, also the blending ramp (default: a quarter of the tile).
        batch_size: slices per pass (a whole volume in one pass could exhaust memory), and tiles per pass.
        training_side: resize the shorter side to this before segmenting and the probabilities back after.
        progress: called with (done, total) slices after each pass.
    """
    parts = []
    for start in range(0, images.shape[0], batch_size):
        probabilities = _at_scale(images[start:start + batch_size], training_side, lambda x: translate_images(
            recipe, x, tile=tile, overlap=overlap, batch_size=batch_size))
        parts.append(recipe.labels_from_probabilities(probabilities).cpu())
        if progress is not None:
            progress(min(images.shape[0], start + batch_size), images.shape[0])
    return torch.cat(parts).numpy()


# --------------------------------------------------------------------------------------------------- inputs


@dataclass
class _Item:
    """One input (a file, or a sample of the split) with what it is scored against."""

    name: str  # output path without suffix, relative to the output folder (posix)
    patient: str
    images: torch.Tensor  # (S, C, H, W) in [-1, 1]
    like: ImageFile  # written like this file
    truth: np.ndarray | None = None  # (S, H, W) int64 class indices
    fov: np.ndarray | None = None  # (S, H, W) bool
    spacing: tuple[float, ...] | None = None
    labels: np.ndarray | None = None  # the prediction, (S, H, W)

    def case(self) -> sm.Case:
        """The item as a case of :func:`~synthmed.metrics.segmentation.score_cases` (2-D when one slice)."""
        assert self.labels is not None and self.truth is not None
        cut = (lambda a: a[0]) if self.labels.shape[0] == 1 else (lambda a: a)
        return sm.Case(self.name, self.patient, cut(self.labels), cut(self.truth),
                       None if self.fov is None else cut(self.fov), self.spacing)


def read_truth_file(path: Path) -> ImageFile:
    """A truth file's values as stored, (S, 1, H, W) in ``values`` (pictures as the loaders read mask files:
    palette indices kept, 1-bit as 0 / 255, colour as grey); shared with :mod:`synthmed.detect`."""
    if path.suffix.lower() not in PICTURE_FORMATS:
        return read_image_file(path, IntensityMapping(kind="fixed", low=0.0, high=1.0), channels=1)
    from synthmed.data.folder import _mask_pixels

    raw = _mask_pixels(path)[None, None]
    return ImageFile(path, torch.from_numpy(raw.astype(np.float32)), "png", str(raw.dtype), 0.0, 1.0, values=raw)


def truth_labels(path: Path, like: ImageFile, recipe: SegmentationRecipe, run_name: str) -> np.ndarray:
    """The truth file ``path`` of the input ``like`` as class indices (S, H, W) int64, checked against the run.

    Args:
        path: the truth file.
        like: its input, read (the truth must have its size and slices).
        recipe: the run's recipe (its class count).
        run_name: the run, for messages.

    Raises:
        DataError: another size than the input, a label map given to a binary run, labels the run does not know.
    """
    truth = read_truth_file(path)
    check_same_size(like, truth)
    raw = np.asarray(truth.values)[:, 0]
    if recipe.binary:
        from synthmed.data.transforms import label_map_levels, mask_threshold

        levels = label_map_levels(raw)
        if levels is not None and len(levels) > 2:
            shown = ", ".join(str(int(v)) for v in levels[:6]) + (", ..." if len(levels) > 6 else "")
            raise DataError(path, f"holds {len(levels)} classes ({shown}) but {run_name} segments 2 classes "
                                  "(binary)")
        return (raw > mask_threshold(raw)).astype(np.int64)
    from synthmed.data.transforms import label_problem

    problem = label_problem(raw)
    if problem is not None:
        raise DataError(path, f"holds {problem}")
    top, classes = int(raw.max(initial=0)), recipe.num_classes
    if top >= classes:
        raise DataError(path, f"holds label {top} but {run_name} segments {classes} classes (labels 0..{classes - 1})")
    return raw.astype(np.int64)


def header_spacing(file: ImageFile, dims: int) -> tuple[float, ...] | None:
    """The pixel (voxel) size in mm a NIfTI or DICOM file records, in the order of its (S, H, W) slices."""
    if file.format == "nifti" and "affine" in file.geometry:
        zooms = np.sqrt((np.asarray(file.geometry["affine"], dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
        axis = int(file.geometry.get("axis", 2))
        first, second = (i for i in range(3) if i != axis)
        plane = (float(zooms[second]), float(zooms[first]))  # the loader's rot90 puts the second axis on the rows
        return plane if dims == 2 else (float(zooms[axis]), *plane)
    if file.format == "dicom":
        from synthmed.data import dicom as dcm

        ds = dcm._read(dcm._pydicom(file.path), file.path)
        pixel = ds.get("PixelSpacing")
        if not pixel:
            return None
        plane = (float(pixel[0]), float(pixel[1]))
        step = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
        return plane if dims == 2 else ((float(step), *plane) if step else None)
    return None


def _spacing(file: ImageFile, given: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """``--spacing`` when it has one size per axis of the file's case, else the file's header."""
    dims = 2 if file.images.shape[0] == 1 else 3
    return given if given is not None and len(given) == dims else header_spacing(file, dims)


def patient_of(relative: Path) -> str:
    """The patient of a file by its path under the input folder: the first sub-folder, else the file."""
    return relative.parts[0] if len(relative.parts) > 1 else relative.name


def _normalize_inputs(recipe: SegmentationRecipe, jobs: list[Any], base: Path) -> None:
    """Inputs of a run trained with ``normalize`` normalised as its images were: per patient (the first
    sub-folder, else the file), or per image; see the module docstring."""
    mapping = side_mappings(recipe, "AtoB")[0]
    groups = [patient_of(job.file.path.relative_to(base)) for job in jobs]
    normalize_files([job.file for job in jobs], mapping, groups)


# ------------------------------------------------------------------------------------------------- writing


def _write_mask(staging: Path, item: _Item, binary: bool) -> Path:
    """The prediction of ``item``: a label volume for NIfTI inputs, else a uint8 picture (0 / 255 when binary)."""
    assert item.labels is not None
    (staging / item.name).parent.mkdir(parents=True, exist_ok=True)
    if item.like.format == "nifti":
        return write_image_file(staging / item.name, item.labels[:, None], item.like, dtype="uint8")
    values = item.labels[:, None] * (255 if binary else 1)
    # A PNG whatever the input's format (a DICOM's stored values, a float TIFF): a mask is not in its units.
    return write_image_file(staging / item.name, values, replace(item.like, format="png"), dtype="uint8")


def overlay(image: torch.Tensor, labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """One picture (H', W', 3) uint8: the image with the prediction against the truth, enlarged when small.

    Yellow: predicted right (same foreground class); green: truth missed or given another class; magenta:
    predicted where the truth is background.

    Args:
        image: (C, H, W) in [-1, 1] (grey, RGB, or more channels of which the first is shown).
        labels: (H, W) predicted class indices.
        truth: (H, W) true class indices.
    """
    from synthmed.data.transforms import to_uint8

    picture = to_uint8(image[:3] if image.shape[0] == 3 else image[:1]).astype(np.float64)
    picture = np.repeat(picture, 3, axis=-1) if picture.shape[-1] == 1 else picture
    agree = (labels == truth) & (truth > 0)
    painted = ((agree, AGREE), ((truth > 0) & ~agree, MISSED), ((labels > 0) & (truth == 0), EXTRA))
    for where, colour in painted:
        picture[where] = (1 - ALPHA) * picture[where] + ALPHA * np.asarray(colour, dtype=np.float64)
    scale = max(1, min(8, OVERLAY_SIDE // max(1, min(labels.shape))))
    picture = np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def _overlay_of(item: _Item) -> np.ndarray:
    """:func:`overlay` of the item's slice with the most truth (a 2-D item's only slice)."""
    assert item.labels is not None and item.truth is not None
    k = int(np.argmax((item.truth > 0).sum(axis=(1, 2))))
    return overlay(item.images[k], item.labels[k], item.truth[k])


def _fitted(picture: np.ndarray, side: int) -> np.ndarray:
    """``picture`` resized to fit a ``side`` x ``side`` black square, its aspect kept, centred."""
    from PIL import Image

    factor = side / max(picture.shape[:2])
    width, height = (max(1, round(n * factor)) for n in (picture.shape[1], picture.shape[0]))
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top:top + height, left:left + width] = np.asarray(Image.fromarray(picture).resize((width, height),
                                                                                            Image.BILINEAR))
    return canvas


def _save_sheet(path: Path, pictures: list[np.ndarray]) -> None:
    """The pictures in a grid, four per row, each fitted into a square of :data:`OVERLAY_SIDE` px."""
    from PIL import Image

    from synthmed.viz.grid import make_grid

    tiles = np.stack([_fitted(p, OVERLAY_SIDE) for p in pictures])
    grid = make_grid(torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 127.5 - 1.0, nrow=4)
    Image.fromarray(grid).save(path, format="JPEG", quality=90)


def _write_pictures(staging: Path, items: list[_Item]) -> None:
    from PIL import Image

    pictures = []
    for i in spread_indices(len(items), OVERLAYS):
        picture = _overlay_of(items[i])
        target = staging / "overlays" / f"{items[i].name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(target)
        pictures.append(picture)
    _save_sheet(staging / "overlays.jpg", [pictures[i] for i in spread_indices(len(pictures), SHEET)])


def plain_json(value: Any) -> Any:
    """``value`` JSON-able: NaN and infinities as ``null`` (JSON has neither), numpy scalars as numbers, dict keys as
    text (shared with :mod:`synthmed.detect`)."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _report(summary: dict[str, Any], header: dict[str, Any]) -> dict[str, Any]:
    """The metrics.json document: the headline Dice of each class first, then every score."""
    dice = {}
    for c, scores in summary["classes"].items():
        dice[c] = {"per_image": scores["per_image"]["dice"]["mean"],
                   "per_patient": scores["per_patient"]["mean"]["dice"]["mean"],
                   "per_patient_interval": scores["per_patient"]["dice_interval"],
                   "pooled": scores["pooled"]["dice"]}
    counts = {"images": summary["n_images"], "patients": summary["n_patients"], "classes": header["num_classes"]}
    return plain_json({**header, "counts": counts, "dice": dice, "classes": summary["classes"],
                       "bootstrap": summary["bootstrap"], "empty_conventions": summary["empty_conventions"]})


def _write_scores(staging: Path, items: list[_Item], recipe: SegmentationRecipe, header: dict[str, Any],
                  ) -> dict[str, Any]:
    """metrics.csv, metrics.json and the overlays of the scored items; returns the metrics.json document."""
    ordered = sorted(items, key=lambda item: (str(item.patient), _natural_key(item.name)))
    slice_spacing = header.get("spacing")[0] if header.get("spacing") and len(header["spacing"]) == 3 else None
    rows, summary = sm.score_cases([item.case() for item in ordered], recipe.num_classes,
                                   slice_spacing=slice_spacing)
    sm.write_scores_csv(staging / "metrics.csv", rows)
    document = _report(summary, {**header, "num_classes": recipe.num_classes})
    (staging / "metrics.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    _write_pictures(staging, items)
    return document


def _natural_key(name: str) -> list[Any]:
    """Sort key comparing the numbers in a name as numbers: a patient's slices ``_2`` before ``_10``, so per-patient
    volumes (HD95 in 3-D) are stacked in slice order, not in the alphabetical order of file names."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _header(model: Any, checkpoint: str, **options: Any) -> dict[str, Any]:
    recipe = model.recipe
    return {"run": str(model.run_dir), "recipe": recipe.name, "checkpoint": checkpoint, "step": model.step,
            "labels": "foreground where p >= 0.5" if recipe.binary else "the most probable class", **options,
            "overlays": "yellow: predicted right; green: truth missed (or another class predicted); magenta: "
                        "predicted on background"}


# ------------------------------------------------------------------------------------------------ top level


def segment_files(model: Any, source: str | Path, out: str | Path, *, compare: str | Path | None = None,
                  fov: str | Path | None = None, tile: int | None = None, overlap: int | None = None,
                  batch_size: int = 4, training_side: int | None = None, spacing: tuple[float, ...] | None = None,
                  checkpoint: str = "", progress: Callable[[int, int], None] | None = None) -> SegmentationResult:
    """Segment a file or a folder; see the module docstring.

    Args:
        model: a loaded segmentation run (:func:`synthmed.api.load`).
        source: a file or a folder of files (PNG, TIFF, JPEG, BMP, GIF, DICOM, NIfTI, npy).
        out: a new or empty folder; masks keep the inputs' stems (and sub-folders).
        compare: a folder of truth masks matched to the inputs by name: metrics and overlays.
        fov: with ``compare``, a folder of field-of-view masks: metrics count pixels inside them only.
        tile: tile side (default: the training size or crop).
        overlap: tile overlap (default: a quarter of the tile).
        batch_size: slices and tiles per forward pass.
        training_side: segment at the training scale (see :func:`synthmed.translate.translate_files`).
        spacing: pixel size in mm for ``hd95_mm`` (rows, columns; or slices, rows, columns for volumes);
            NIfTI and DICOM files give their header's when this does not fit them.
        checkpoint: the checkpoint used, in words, for the report.
        progress: called with (done, total) files.

    Raises:
        ConfigError: a bad option or output folder.
        DataError: unreadable inputs, a channel count the run was not trained on, unmatched or differently sized
            truth masks, truth classes the run does not segment: one line naming the file; nothing is written.
    """
    recipe = check_segmentation_run(model.recipe, model.run_dir)
    out = empty_output_folder(out)
    if fov is not None and compare is None:
        raise ConfigError("--fov restricts the metrics of --compare; give --compare TRUTH_DIR too")
    root = Path(source).expanduser()
    files = input_files(root, task="segment")
    jobs = list(read_jobs(recipe, files, root, "AtoB", None, fov, normalize=False))  # every check before any write
    truths = targets_for(files, root, compare, "truth masks", any_format=True) if compare is not None else \
        [None] * len(files)
    base = root if root.is_dir() else root.parent
    _normalize_inputs(recipe, jobs, base)
    items = []
    for job, truth_path in zip(jobs, truths, strict=True):
        relative = job.file.path.relative_to(base).with_name(file_stem(job.file.path))
        item = _Item(relative.as_posix(), patient_of(relative), job.file.images, job.file,
                     fov=None if job.fov is None else job.fov[:, 0] > 0, spacing=_spacing(job.file, spacing))
        if truth_path is not None:
            item.truth = truth_labels(truth_path, job.file, recipe, model.run_dir.name)
        items.append(item)
    result = SegmentationResult(out=out, checkpoint=checkpoint)

    def write(staging: Path) -> None:
        for done, item in enumerate(items, 1):
            item.labels = predict_labels(recipe, item.images, tile=tile, overlap=overlap, batch_size=batch_size,
                                         training_side=training_side)
            result.outputs.append(out / _write_mask(staging, item, recipe.binary).relative_to(staging))
            if progress is not None:
                progress(done, len(items))
        if compare is not None:
            header = _header(model, checkpoint, source=str(source), compare=str(compare),
                             fov=None if fov is None else str(fov), tile=tile, overlap=overlap,
                             training_side=training_side, spacing=spacing)
            result.metrics = _write_scores(staging, items, recipe, header)

    write_folder_atomically(out, write)
    return result


def split_names(meta: list[dict[str, Any]], n: int, split: str) -> list[str]:
    """Output names of the split's samples: their files' stems where known, else ``<split>_<row>``; unique."""
    names = [file_stem(Path(m["path"])) if m.get("path") else f"{split}_{int(m.get('index', i)):04d}"
             for i, m in enumerate(meta or [{}] * n)]
    if len(set(names)) < len(names):  # the same stem in two patients' folders
        names = [f"{i:04d}_{name}" for i, name in enumerate(names)]
    return names


_split_names = split_names  # the name benchmarks/segmentation_figures.py imports


def segment_split(model: Any, out: str | Path, *, split: str = "test", batch_size: int = 4,
                  spacing: tuple[float, ...] | None = None, checkpoint: str = "",
                  progress: Callable[[int, int], None] | None = None) -> SegmentationResult:
    """Segment the held-out ``split`` of the run's own data, write its masks and score them per image, per
    patient (the data's patient ids; each image its own patient without them) and pooled.

    Args:
        model: a loaded segmentation run (:func:`synthmed.api.load`).
        out: a new or empty folder.
        split: ``test`` or ``val``.
        batch_size: images per forward pass.
        spacing: pixel size in mm (rows, columns) for ``hd95_mm``.
        checkpoint: the checkpoint used, in words, for the report.
        progress: called with (done, total) images.

    Raises:
        ConfigError: the run trained on split ``all`` (nothing is held out), a bad output folder.
    """
    recipe = check_segmentation_run(model.recipe, model.run_dir)
    out = empty_output_folder(out)
    held_out = load_held_out(model.config.data, split)
    images, targets = held_out.tensors["image"], held_out.tensors["target"]
    fov = held_out.tensors.get("mask")
    names = split_names(list(getattr(held_out, "meta", []) or []), len(images), split)
    patients = names if held_out.patients is None else [str(p) for p in held_out.patients]
    like = ImageFile(Path("mask.png"), torch.empty(0), "png", "uint8", 0.0, 1.0)
    items = [_Item(names[i], patients[i], images[i:i + 1], like, truth=targets[i:i + 1, 0].round().long().numpy(),
                   fov=None if fov is None else fov[i:i + 1, 0].numpy() > 0.5,
                   spacing=spacing if spacing is not None and len(spacing) == 2 else None)
             for i in range(len(images))]
    result = SegmentationResult(out=out, checkpoint=checkpoint)

    def write(staging: Path) -> None:
        labels = predict_labels(recipe, images, batch_size=batch_size, progress=progress)
        for i, item in enumerate(items):
            item.labels = labels[i:i + 1]
            result.outputs.append(out / _write_mask(staging, item, recipe.binary).relative_to(staging))
        header = _header(model, checkpoint, source=str(model.config.data.source), split=split, spacing=spacing)
        result.metrics = _write_scores(staging, items, recipe, header)

    write_folder_atomically(out, write)
    return result
