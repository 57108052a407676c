"""``synthmed detect``: an anomaly run (``--recipe anomaly``) applied to files, an npz or its own held-out split:
a score per image, an anomaly map per image, and a decision at a threshold stored with the model.

Scores (:meth:`synthmed.recipes.anomaly.AnomalyGAN.score`): ``fanogan`` (one encoder pass, ``score = residual +
kappa * feature``; needs a checkpoint after the GAN phase, step > ``gan_steps``) or ``anogan`` (a latent search
per image with G and D only; ``--anogan-steps``, ``--anogan-lambda``, ``--anogan-restarts``).

Maps: the residual |x - G(.)| averaged over channels, inside a foreground mask of the body (or brain): pixels
brighter than :data:`FOREGROUND_LEVEL` of the image's own range, holes filled, the largest connected component
(the whole image when it is flat). The map is masked, Gaussian-smoothed with ``smooth`` px (default 1.0: enough
to merge the speckle of a GAN's reconstruction into blobs without blurring away a lesion of a few pixels; 0
turns it off) and masked again, so nothing outside the body counts. Maps are at the model's size.

Thresholds are calibrated on the run's validation split and stored with the model, one file per method,
``RUN/anomaly/threshold-<method>.json`` (written atomically): the image threshold (rule ``percentile``: that
percentile, default 95, of the normal images' scores; ``youden`` / ``f1``: the best cut on labelled val images),
the pixel threshold for binary maps (the 99th percentile of the normal images' map values inside the foreground;
with ``youden`` / ``f1`` and val masks, the threshold of the best pooled Dice), the split, counts, the checkpoint
(file, step, weights SHA-256), the scoring settings (method, AnoGAN search, smoothing, foreground level). A stored
threshold is applied only to the checkpoint and settings it was calibrated for, and when no other rule or
percentile is asked; otherwise, or when none is stored, detection calibrates first (and says so), with the rule
asked, else the stored one's, else ``percentile``. ``recalibrate`` forces it; a hand-given threshold overrides
(and is not stored). A run trained on split ``all`` has no val split: give the threshold by hand.

Normal and anomalous: an image whose mask is empty is normal, one with a non-empty mask anomalous; without masks,
class labels: the class the run's ``normal`` option names is normal (labels 0 where it names none), every other
class anomalous. Without either, every image of the val split counts as normal (the percentile rule only).

Inputs: a folder or file (PNG, TIFF, JPEG, BMP, GIF, DICOM, NIfTI, npy; truth masks matched by name with
``masks``), an npz of named arrays (optional ``masks``, ``labels``, ``patient``; read with the run's data
options), or the run's held-out ``split`` (read as the run read its data: ``normalize``, ``size``, channels).
Files are read with the run's intensity mapping (``normalize="patient"``: per first sub-folder, as
:mod:`synthmed.segment`). Another channel count is refused; another size is resized to the model's (a non-square
image centre-cropped to square first, as the training loaders do, so resizing always works) with a warning.

Outputs (``out``, new or empty; it appears whole or not at all):

* ``scores.csv``: one row per image: index, name, patient, score, residual, feature, decision (score > the
  threshold), label (1 anomalous, 0 normal, empty when unknown);
* ``maps.npz`` (``maps`` float32 (N, H, W), ``foreground`` bool, ``names``, ``masks`` bool when known, all at
  the model's size); ``maps/<name>.png``, 8-bit, one scale for the whole set (its largest value is white,
  recorded in ``detection.json``); ``binary/<name>.png`` (0 / 255 at the pixel threshold) when there is one;
* ``sheets/*.jpg``: rows image | reconstruction | map (red above the pixel threshold) | truth (when given), for
  the highest and lowest scores and a spread over the set;
* ``detection.json``: the header (run, checkpoint, method, settings, threshold record, counts, conventions);
* ``metrics.json`` with truth: the header plus image AUROC, AUPRC, sensitivity at 95% specificity and the
  confusion at the threshold (masks or labels), pixel AUPRC, best Dice and Dice at the pixel threshold (masks),
  from :mod:`synthmed.metrics.anomaly`.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.data.intensity import ImageFile, IntensityMapping, mapping_from_info, normalize_files, read_image_file
from synthmed.data.transforms import center_crop_square, label_map_levels, mask_threshold, resize
from synthmed.errors import ConfigError, DataError, SynthmedError
from synthmed.io import atomic_write_text, empty_output_folder, write_folder_atomically
from synthmed.recipes.anomaly import METHODS, AnomalyGAN, AnomalyScores, residual_map
from synthmed.segment import _patient, _plain, _read_truth, _split_names
from synthmed.translate import check_same_size, file_stem, input_files, targets_for

#: Foreground: pixels above this fraction of the image's own range (from its darkest pixel).
FOREGROUND_LEVEL = 0.1
#: Default Gaussian smoothing of the maps, in pixels.
SMOOTH = 1.0
#: Percentile of the normal val images' scores that is the default image threshold.
PERCENTILE = 95.0
#: Percentile of the normal val images' map values (inside the foreground) that is the pixel threshold.
PIXEL_PERCENTILE = 99.0
RULES = ("percentile", "youden", "f1")
SPLITS = ("test", "val")
#: Rows per overlay sheet; columns are enlarged to about this side.
SHEET_ROWS, SHEET_SIDE = 8, 128
THRESHOLD_FORMAT = "synthmed-anomaly-threshold/1"
EMPTY_MASKS = ("an image whose truth mask is empty is normal (label 0), one with a non-empty mask anomalous (1); "
               "pixel scores pool every pixel inside the foreground of every image, so the pixels of empty-mask "
               "images count as negatives (their false positives lower the pooled Dice and AUPRC)")

Progress = Callable[[int, int], None]
Note = Callable[[str], None]


# segment's helpers that detection shares, under public names (segment keeps them private).


def patient_of(relative: Path) -> str:
    """The patient of a file by its path under the input folder: the first sub-folder, else the file."""
    return _patient(relative)


def plain_json(value: Any) -> Any:
    """``value`` JSON-able: NaN as null, numpy scalars as numbers, dict keys as text."""
    return _plain(value)


def split_names(meta: list[dict[str, Any]], n: int, split: str) -> list[str]:
    """Output names of a split's samples: their files' stems, else ``<split>_<row>``; unique."""
    return _split_names(meta, n, split)


def read_truth_file(path: Path) -> ImageFile:
    """A truth file's values as stored (S, 1, H, W) in ``values``, read as the loaders read mask files."""
    return _read_truth(path)


# ------------------------------------------------------------------------------------ settings and records


@dataclass
class Settings:
    """How images are scored and mapped; a stored threshold applies only to the same :meth:`identity`.

    Args:
        method: ``fanogan`` or ``anogan``.
        smooth: Gaussian sigma of the maps in px (0: none).
        anogan_steps: AnoGAN search steps per image.
        anogan_lambda: weight of AnoGAN's feature loss.
        anogan_restarts: AnoGAN starting points per image.
        anogan_lr: Adam learning rate of the search.
        seed: seed of the search's starting points.
        batch_size: images per pass (not part of the identity).
    """

    method: str = "fanogan"
    smooth: float = SMOOTH
    anogan_steps: int = 500
    anogan_lambda: float = 0.1
    anogan_restarts: int = 1
    anogan_lr: float = 0.05
    seed: int = 0
    batch_size: int = 64

    def check(self) -> Settings:
        """``self``, or a one-line :class:`ConfigError` naming the bad option."""
        problems = [
            (self.method not in METHODS, f"--method must be one of {', '.join(METHODS)} (got {self.method!r})"),
            (not (math.isfinite(self.smooth) and self.smooth >= 0), f"--smooth must be 0 or more (got {self.smooth})"),
            (self.anogan_steps < 1, f"--anogan-steps must be at least 1 (got {self.anogan_steps})"),
            (not 0.0 <= self.anogan_lambda <= 1.0, f"--anogan-lambda must be in [0, 1] (got {self.anogan_lambda})"),
            (self.anogan_restarts < 1, f"--anogan-restarts must be at least 1 (got {self.anogan_restarts})"),
            (not self.anogan_lr > 0, f"--anogan-lr must be positive (got {self.anogan_lr})"),
            (self.batch_size < 1, f"--batch-size must be at least 1 (got {self.batch_size})"),
        ]
        for failed, message in problems:
            if failed:
                raise ConfigError(message)
        return self

    def identity(self) -> dict[str, Any]:
        """What a score or a map depends on besides the checkpoint (the search only for AnoGAN)."""
        found: dict[str, Any] = {"method": self.method, "smooth": float(self.smooth),
                                 "foreground_level": FOREGROUND_LEVEL}
        if self.method == "anogan":
            found["anogan"] = {"steps": self.anogan_steps, "lambda": float(self.anogan_lambda),
                               "restarts": self.anogan_restarts, "lr": float(self.anogan_lr), "seed": self.seed}
        return found


@dataclass
class Calibration:
    """The rule of a threshold; ``None`` fields take a stored record's value, else the defaults.

    Args:
        rule: ``percentile`` (of the normal val scores) or ``youden`` / ``f1`` (labelled val images).
        percentile: the percentile of the ``percentile`` rule.
        pixel_percentile: the percentile of the normal val map values that is the pixel threshold.
    """

    rule: str | None = None
    percentile: float | None = None
    pixel_percentile: float | None = None

    def check(self) -> Calibration:
        if self.rule is not None and self.rule not in RULES:
            raise ConfigError(f"--rule must be one of {', '.join(RULES)} (got {self.rule!r})")
        for flag, value in (("--percentile", self.percentile), ("--pixel-percentile", self.pixel_percentile)):
            if value is not None and not 0.0 < value < 100.0:
                raise ConfigError(f"{flag} must be between 0 and 100 (got {value})")
        return self

    def resolved(self, record: dict[str, Any] | None = None) -> Calibration:
        """Every field set: the given ones, else the record's, else the defaults."""
        stored = record or {}
        return Calibration(self.rule or stored.get("rule") or "percentile",
                           _first(self.percentile, stored.get("percentile"), PERCENTILE),
                           _first(self.pixel_percentile, (stored.get("pixel") or {}).get("percentile"),
                                  PIXEL_PERCENTILE))


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


@dataclass(frozen=True)
class CheckpointId:
    """The checkpoint a run was loaded at: its JSON file, step and weights digest (what thresholds are tied to)."""

    file: str
    step: int
    sha256: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "step": self.step, "sha256": self.sha256, "description": self.description}


def identify_checkpoint(run_dir: Path, choice: str | Path | None, step: int) -> CheckpointId:
    """The checkpoint :func:`synthmed.api.load` read for ``choice`` (``None``: the latest valid one, at ``step``).

    Args:
        run_dir: the run.
        choice: ``None``, ``"best"`` or a checkpoint JSON.
        step: the loaded model's step.
    """
    from synthmed.training.checkpoint import list_checkpoints

    if choice is None:
        found = [p for p in list_checkpoints(run_dir / "checkpoints") if _record_of(p).get("step") == step]
        if not found:
            raise SynthmedError(f"{run_dir / 'checkpoints'}: no checkpoint of step {step} (the one loaded)")
        path, words = found[-1], f"latest (step {step})"
    elif str(choice) == "best":
        path, words = run_dir / "checkpoints" / "best.json", f"best (step {step})"
    else:
        path, words = Path(choice), f"{choice} (step {step})"
    return CheckpointId(path.name, step, str(_record_of(path).get("sha256", "")), words)


def _record_of(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise SynthmedError(f"{path}: cannot read checkpoint ({exc})") from None


def check_anomaly_run(model: Any, method: str) -> AnomalyGAN:
    """The run's recipe if it is an anomaly model at a step where ``method`` can score; one line otherwise.

    Args:
        model: a loaded run (:func:`synthmed.api.load`).
        method: ``fanogan`` (needs the encoder phase: step > ``gan_steps``) or ``anogan`` (G and D: step >= 1).
    """
    recipe = model.recipe
    if not isinstance(recipe, AnomalyGAN):
        raise SynthmedError(f"{model.run_dir}: recipe {getattr(recipe, 'name', '?')!r} is not an anomaly model; "
                            "train --recipe anomaly")
    gan_steps = int(recipe.config.gan_steps)
    if method == "fanogan" and model.step <= gan_steps:
        raise ConfigError(f"{model.run_dir}: the checkpoint at step {model.step} is still in the GAN phase "
                          f"(gan_steps={gan_steps}), so f-AnoGAN has no trained encoder; train on (synthmed train "
                          "--resume RUN --steps N) or use --method anogan")
    if model.step < 1:
        raise ConfigError(f"{model.run_dir}: the checkpoint is at step 0; AnoGAN needs a trained generator")
    return recipe


# ----------------------------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    """Scores of a set of images, their maps and foregrounds.

    Args:
        scores: the recipe's scores (score, residual, feature, reconstruction).
        maps: (N, H, W) float32 anomaly maps, 0 outside the foreground.
        foreground: (N, H, W) bool body masks.
    """

    scores: AnomalyScores
    maps: np.ndarray
    foreground: np.ndarray


def foreground_mask(images: torch.Tensor, level: float = FOREGROUND_LEVEL) -> np.ndarray:
    """Body (or brain) masks (N, H, W) bool of images (N, C, H, W): pixels above ``level`` of each image's own
    range, holes filled, the largest connected component; a flat image is foreground everywhere."""
    grey = images.float().mean(dim=1).numpy()
    return np.stack([_body(g, level) for g in grey]) if len(grey) else np.zeros(grey.shape, bool)


def _body(grey: np.ndarray, level: float) -> np.ndarray:
    from scipy import ndimage

    low, high = float(grey.min()), float(grey.max())
    if high - low < 1e-6:
        return np.ones(grey.shape, bool)
    filled = ndimage.binary_fill_holes(grey > low + level * (high - low))
    components, count = ndimage.label(filled)
    if count == 0:
        return np.ones(grey.shape, bool)
    largest = int(np.argmax(np.bincount(components.ravel())[1:])) + 1
    return components == largest


def anomaly_maps(images: torch.Tensor, reconstruction: torch.Tensor, foreground: np.ndarray,
                 smooth: float = SMOOTH) -> np.ndarray:
    """Maps (N, H, W) float32: |x - x_hat| (mean over channels) masked, smoothed by ``smooth`` px, masked again.

    Masking before smoothing keeps the background's reconstruction error from bleeding into the body's edge;
    masking after keeps the smoothed values inside it.

    Args:
        images: (N, C, H, W) in [-1, 1].
        reconstruction: the recipe's reconstructions of ``images``.
        foreground: (N, H, W) bool, from :func:`foreground_mask`.
        smooth: Gaussian sigma in px; 0 for none.
    """
    from scipy import ndimage

    maps = residual_map(images, reconstruction)[:, 0].numpy().astype(np.float64) * foreground
    if smooth > 0:
        maps = ndimage.gaussian_filter(maps, sigma=(0, smooth, smooth), mode="constant")
    return (maps * foreground).astype(np.float32)


def score_images(recipe: AnomalyGAN, images: torch.Tensor, settings: Settings,
                 progress: Progress | None = None) -> Scored:
    """Scores, maps and foregrounds of ``images`` (N, C, H, W) in [-1, 1] at the model's size.

    Args:
        recipe: a loaded anomaly recipe.
        images: the images.
        settings: the method and its options.
        progress: called with (done, total) images (after each AnoGAN batch).
    """
    n = int(images.shape[0])
    if settings.method == "anogan":
        scores = recipe.anogan_scores(
            images, steps=settings.anogan_steps, lam=settings.anogan_lambda, restarts=settings.anogan_restarts,
            lr=settings.anogan_lr, batch_size=settings.batch_size, seed=settings.seed,
            on_batch=None if progress is None else (lambda done: progress(done, n)))
    else:
        scores = recipe.fanogan_scores(images, batch_size=settings.batch_size)
    if progress is not None:
        progress(n, n)
    foreground = foreground_mask(images)
    return Scored(scores, anomaly_maps(images, scores.reconstruction, foreground, settings.smooth), foreground)


# ------------------------------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """Images to score at the model's size, with what is known of them.

    Args:
        images: (N, C, S, S) in [-1, 1].
        names: output names (posix paths without suffix, unique).
        patients: the patient of each image, ``""`` where unknown.
        masks: (N, S, S) bool truth masks, or None.
        labels: (N,) int64 truth, 1 anomalous, 0 normal, or None.
        source: where they came from, in words.
        truth: how ``labels`` were made, in words.
    """

    images: torch.Tensor
    names: list[str]
    patients: list[str]
    masks: np.ndarray | None = None
    labels: np.ndarray | None = None
    source: str = ""
    truth: str = ""

    def normal(self) -> np.ndarray:
        """Which images are normal: label 0; all of them when no truth is known."""
        return np.ones(len(self.names), bool) if self.labels is None else self.labels == 0


def input_mapping(recipe: AnomalyGAN) -> IntensityMapping:
    """The intensity mapping the run recorded for its images (8-bit for runs saved before mappings were kept)."""
    return mapping_from_info(recipe.data_info) or IntensityMapping(kind="fixed", low=0.0, high=255.0)


def fit_to_model(images: torch.Tensor, side: int, what: str | Path) -> torch.Tensor:
    """(N, C, H, W) images at ``side`` x ``side``: as they are, or centre-cropped to square and resized (as the
    training loaders do for ``--size``) with a warning naming ``what``."""
    height, width = int(images.shape[-2]), int(images.shape[-1])
    if (height, width) == (side, side):
        return images
    crop = " (centre-cropped to square first)" if height != width else ""
    warnings.warn(f"{what}: {width}x{height} px resized to the model's {side}x{side} px{crop}; maps are at the "
                  "model's size", stacklevel=2)
    return resize(center_crop_square(images.float()), side)


def fit_masks(masks: np.ndarray, side: int) -> np.ndarray:
    """(N, H, W) bool masks cropped and resized (nearest) as :func:`fit_to_model` does their images."""
    if masks.shape[-2:] == (side, side):
        return masks
    tensor = torch.from_numpy(np.ascontiguousarray(center_crop_square(masks))).float()[:, None]
    return resize(tensor, side, mask=True)[:, 0].numpy() > 0.5


def read_truth_mask(path: Path, like: ImageFile) -> np.ndarray:
    """The truth mask ``path`` of the input ``like``: (S, H, W) bool, binarised as the loaders binarise masks.

    Raises:
        DataError: another size or slice count than the input, or a label map of more than two values.
    """
    truth = read_truth_file(path)
    check_same_size(like, truth)
    raw = np.asarray(truth.values)[:, 0]
    levels = label_map_levels(raw)
    if levels is not None and len(levels) > 2:
        shown = ", ".join(str(int(v)) for v in levels[:6]) + (", ..." if len(levels) > 6 else "")
        raise DataError(path, f"holds {len(levels)} labels ({shown}); anomaly truth masks are binary (0 / 255, "
                              "0 / 1)")
    return raw > mask_threshold(raw)


def _check_channels(found: int, recipe: AnomalyGAN, what: str | Path, run_name: str) -> None:
    expected = recipe.data_info.channels
    if found != expected:
        raise DataError(what, f"has {found} channel(s) but {run_name} was trained on {expected}")


def read_files(recipe: AnomalyGAN, source: str | Path, masks: str | Path | None) -> Inputs:
    """A file or folder of images (and a folder of truth masks matched by name); every check before scoring.

    Args:
        recipe: the run's recipe.
        source: a file or folder (PNG, TIFF, JPEG, BMP, GIF, DICOM, NIfTI, npy).
        masks: a folder of truth masks matched to the inputs by file name, or None.
    """
    root = Path(source).expanduser()
    files = input_files(root)
    base = root if root.is_dir() else root.parent
    mapping = input_mapping(recipe)
    read = [read_image_file(path, mapping, channels=recipe.data_info.channels) for path in files]
    relatives = [p.relative_to(base).with_name(file_stem(p)) for p in files]
    normalize_files(read, mapping, [patient_of(r) for r in relatives])
    truths = targets_for(files, root, masks, "truth masks", any_format=True) if masks is not None else None
    parts = [_file_part(f, r, None if truths is None else truths[i], recipe.train_size)
             for i, (f, r) in enumerate(zip(read, relatives, strict=True))]
    images = torch.cat([p[0] for p in parts])
    names = [name for p in parts for name in p[1]]
    patients = [patient for p in parts for patient in p[2]]
    truth = None if truths is None else np.concatenate([p[3] for p in parts])
    labels = None if truth is None else truth.any(axis=(1, 2)).astype(np.int64)
    return Inputs(images, names, patients, truth, labels, str(source),
                  "from masks: a non-empty mask is anomalous" if truth is not None else "")


def _file_part(file: ImageFile, relative: Path, truth_path: Path | None, side: int
               ) -> tuple[torch.Tensor, list[str], list[str], np.ndarray | None]:
    """One file's slices at the model's size, their names and patients, and its truth (S, side, side)."""
    slices = int(file.images.shape[0])
    stem = relative.as_posix()
    names = [stem] if slices == 1 else [f"{stem}_{s:03d}" for s in range(slices)]
    patient = relative.parts[0] if len(relative.parts) > 1 else (relative.name if slices > 1 else "")
    truth = None if truth_path is None else fit_masks(read_truth_mask(truth_path, file), side)
    return fit_to_model(file.images, side, file.path), names, [patient] * slices, truth


def read_npz_input(model: Any, recipe: AnomalyGAN, path: Path) -> Inputs:
    """An npz of named arrays (images, optional masks / labels / patient ids) read with the run's data options."""
    from synthmed.data import load_dataset

    data = model.config.data
    keys = ("image_key", "label_key", "mask_key", "patient_key", "channels", "intensity_range", "normalize")
    data_set = load_dataset(path, split="all", **{k: getattr(data, k) for k in keys})
    _check_channels(int(data_set.images.shape[1]), recipe, path, model.run_dir.name)
    rows = [int(m.get("index", i)) for i, m in enumerate(data_set.meta or [{}] * len(data_set))]
    return _from_dataset(model, recipe, data_set, [f"{row:04d}" for row in rows], str(path), path)


def read_split(model: Any, recipe: AnomalyGAN, split: str) -> Inputs:
    """The run's held-out ``split`` read as the run read its data (its options: ``normalize``, ``size``, ...).

    Raises:
        ConfigError: the run trained on split ``all`` (nothing held out), or ``split`` is not test or val.
    """
    from synthmed.data import load_training_set

    data = model.config.data
    if split not in SPLITS:
        raise ConfigError(f"--split {split}: score a held-out split, test or val (the run trained on its train split)")
    if data.split == "all":
        raise ConfigError(f"{model.run_dir}: the run trained on split 'all', so its data hold nothing out for "
                          f"--split {split}; give held-out images as INPUT (and a threshold with --threshold)")
    options = data.loader_options()
    options.update(split=split)
    data_set = load_training_set(data.source, **options)
    names = split_names(list(data_set.meta or []), len(data_set), split)
    return _from_dataset(model, recipe, data_set, names, f"{data.source} ({split} split)", data.source)


def _from_dataset(model: Any, recipe: AnomalyGAN, data_set: Any, names: list[str], source: str,
                  what: str | Path) -> Inputs:
    """Inputs of a loaded image set: images at the model's size, truth from masks, else from class labels."""
    side = recipe.train_size
    if len(data_set) == 0:
        raise DataError(what, f"holds no images for {source}")
    images = fit_to_model(data_set.images, side, what)
    patients = [""] * len(names) if data_set.patients is None else [str(p) for p in data_set.patients]
    if data_set.masks is not None:
        masks = fit_masks(data_set.masks[:, 0].numpy() > 0.5, side)
        return Inputs(images, names, patients, masks, masks.any(axis=(1, 2)).astype(np.int64), source,
                      "from masks: a non-empty mask is anomalous")
    if data_set.labels is None:
        return Inputs(images, names, patients, source=source)
    normal, words = _normal_class(str(recipe.config.normal), tuple(data_set.info.class_names))
    labels = (data_set.labels.numpy() != normal).astype(np.int64)
    return Inputs(images, names, patients, labels=labels, source=source, truth=words)


def _normal_class(option: str, class_names: tuple[str, ...]) -> tuple[int, str]:
    """The normal class index: the one the run's ``normal`` option names, else 0."""
    if option in class_names:
        index = class_names.index(option)
    elif option.lstrip("-").isdigit():
        index = int(option)
    else:
        index = 0
    shown = class_names[index] if index < len(class_names) else index
    return index, f"from class labels: class {shown} is normal, every other class anomalous"


# -------------------------------------------------------------------------------------------- thresholds


def threshold_path(run_dir: Path, method: str) -> Path:
    """Where the threshold of ``method`` is stored with the model."""
    return run_dir / "anomaly" / f"threshold-{method}.json"


def read_threshold(run_dir: Path, method: str) -> dict[str, Any] | None:
    """The stored threshold record of ``method``; None when there is none (or it cannot be read: recalibrated)."""
    path = threshold_path(run_dir, method)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == THRESHOLD_FORMAT else None


def stale_reason(record: dict[str, Any], checkpoint: CheckpointId, settings: Settings,
                 wanted: Calibration) -> str | None:
    """Why a stored record does not apply (another checkpoint, settings or asked rule), or None when it does."""
    stored = record.get("checkpoint") or {}
    if stored.get("sha256") != checkpoint.sha256:
        return (f"it was calibrated for checkpoint {stored.get('file')} (step {stored.get('step')}), not "
                f"{checkpoint.file} (step {checkpoint.step})")
    identity = settings.identity()
    changed = sorted(k for k in set(identity) | set(record.get("settings") or {})
                     if identity.get(k) != (record.get("settings") or {}).get(k))
    if changed:
        return f"it was calibrated with other settings ({', '.join(changed)})"
    if _rule_key(wanted.resolved(record)) != _rule_key(Calibration().resolved(record)):
        return f"it used rule {record.get('rule')} and another rule or percentile is asked"
    return None


def _rule_key(rule: Calibration) -> tuple[Any, ...]:
    """What a calibration rule decides by (the percentile only for the percentile rule)."""
    return rule.rule, rule.percentile if rule.rule == "percentile" else None, rule.pixel_percentile


def check_calibration_set(val: Inputs, rule: str) -> None:
    """Refuse, before any scoring, a val split ``rule`` cannot calibrate on.

    Raises:
        DataError: no normal val images, or a labelled rule without both normal and anomalous ones.
    """
    normal = val.normal()
    if not normal.any():
        raise DataError(val.source, "has no normal images to calibrate a threshold on")
    if rule != "percentile" and (val.labels is None or normal.all()):
        raise DataError(val.source, f"--rule {rule} needs labelled anomalous images (non-empty masks or another "
                                    "class) in the val split; use --rule percentile")


def calibrate(val: Inputs, scored: Scored, calibration: Calibration) -> dict[str, Any]:
    """The image and pixel thresholds of scored val images by ``calibration`` (resolved); see the module doc.

    Args:
        val: the val split's images and truth (checked by :func:`check_calibration_set`).
        scored: their scores and maps.
        calibration: the rule.
    """
    from synthmed.metrics import anomaly as am

    rule = calibration.resolved()
    check_calibration_set(val, str(rule.rule))
    scores = scored.scores.score.double().numpy()
    if rule.rule == "percentile":
        value = am.percentile_threshold(scores[val.normal()], rule.percentile)
    else:
        value = am.labelled_threshold(scores, val.labels, rule=rule.rule)
    return {"rule": rule.rule, "percentile": rule.percentile if rule.rule == "percentile" else None,
            "value": float(value), "pixel": _pixel_threshold(val, scored, rule)}


def _pixel_threshold(val: Inputs, scored: Scored, rule: Calibration) -> dict[str, Any]:
    """The 99th (``pixel_percentile``) percentile of normal map values inside the foreground; with a labelled
    rule and val masks holding anomalies, the threshold of the best pooled Dice."""
    from synthmed.metrics import anomaly as am

    if rule.rule != "percentile" and val.masks is not None and val.masks.any():
        best = am.pixel_metrics(scored.maps, val.masks, foreground=scored.foreground)
        return {"rule": "best-dice", "percentile": rule.pixel_percentile,
                "value": float(best["best_dice_threshold"])}
    normal = val.normal()
    values = scored.maps[normal][scored.foreground[normal]]
    value = am.percentile_threshold(values, rule.pixel_percentile) if values.size else None
    return {"rule": "percentile", "percentile": rule.pixel_percentile, "value": value}


def store_threshold(run_dir: Path, found: dict[str, Any], val: Inputs, checkpoint: CheckpointId,
                    settings: Settings, split: str = "val") -> dict[str, Any]:
    """The full record of a calibration, written atomically to :func:`threshold_path`; returned."""
    normal = val.normal()
    record = {"format": THRESHOLD_FORMAT, "method": settings.method, **found, "split": split,
              "counts": {"images": len(val.names), "normal": int(normal.sum()),
                         "anomalous": int((~normal).sum()) if val.labels is not None else None},
              "truth": val.truth or "none: every val image counts as normal",
              "checkpoint": checkpoint.to_dict(), "settings": settings.identity(),
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    record = plain_json(record)
    atomic_write_text(threshold_path(run_dir, settings.method), json.dumps(record, indent=2) + "\n")
    return record


@dataclass
class Threshold:
    """The thresholds detection applies, and where they came from.

    Args:
        value: the image threshold (decision: score > value).
        pixel: the pixel threshold of binary maps, or None.
        record: the stored record used (or written), None for hand-given thresholds without one.
        source: ``stored``, ``calibrated`` or ``given``.
        val: the val split's inputs and scores when calibrated now (reused when detecting on val).
    """

    value: float
    pixel: float | None
    record: dict[str, Any] | None
    source: str
    val: tuple[Inputs, Scored] | None = None

    def header(self) -> dict[str, Any]:
        return {"source": self.source, "value": self.value, "pixel_value": self.pixel, "record": self.record}


def choose_threshold(model: Any, recipe: AnomalyGAN, checkpoint: CheckpointId, settings: Settings,
                     calibration: Calibration, *, given: float | None = None, given_pixel: float | None = None,
                     recalibrate: bool = False, progress: Progress | None = None,
                     note: Note | None = None) -> Threshold:
    """The stored threshold when it applies; else a calibration on the val split, stored first; a hand-given
    threshold overrides (the stored pixel threshold is kept when it applies and none is given).

    Args:
        model: the loaded run.
        recipe: its anomaly recipe.
        checkpoint: the checkpoint loaded.
        settings: scoring settings.
        calibration: the rule asked (``None`` fields: the stored one's, else the defaults).
        given: a hand-given image threshold.
        given_pixel: a hand-given pixel threshold.
        recalibrate: calibrate even when a stored threshold applies.
        progress: progress of the val split's scoring.
        note: called with a line saying what was done (calibrated, and why).
    """
    say = note or (lambda _: None)
    record = read_threshold(model.run_dir, settings.method)
    reason = None if record is None else stale_reason(record, checkpoint, settings, calibration)
    if given is not None:
        kept = record if record is not None and reason is None else None
        pixel = given_pixel if given_pixel is not None else (kept or {}).get("pixel", {}).get("value")
        return Threshold(float(given), None if pixel is None else float(pixel), kept, "given")
    if record is not None and reason is None and not recalibrate:
        pixel = given_pixel if given_pixel is not None else record["pixel"]["value"]
        return Threshold(float(record["value"]), pixel, record, "stored")
    why = ("--recalibrate" if recalibrate else "no threshold is stored" if record is None
           else f"the stored threshold does not apply: {reason}")
    if model.config.data.split == "all":
        raise ConfigError(f"{model.run_dir}: {why} for {settings.method}, and the run trained on split 'all', so "
                          "it has no val split to calibrate on; give the threshold by hand (--threshold VALUE)")
    rule = calibration.resolved(record)
    val = read_split(model, recipe, "val")
    check_calibration_set(val, str(rule.rule))
    say(f"{why}; calibrating the {settings.method} threshold on the val split ({len(val.names)} images, "
        f"rule {rule.rule})")
    scored = score_images(recipe, val.images, settings, progress)
    stored = store_threshold(model.run_dir, calibrate(val, scored, rule), val, checkpoint, settings)
    say(f"stored threshold {stored['value']:.6g} (pixel {_number(stored['pixel']['value'])}) in "
        f"{threshold_path(model.run_dir, settings.method)}")
    pixel = given_pixel if given_pixel is not None else stored["pixel"]["value"]
    return Threshold(float(stored["value"]), pixel, stored, "calibrated", (val, scored))


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


# ------------------------------------------------------------------------------------------------ writing


@dataclass
class DetectionResult:
    """What :func:`detect` wrote.

    Args:
        out: the output folder.
        rows: the scores.csv rows.
        threshold: the thresholds applied.
        metrics: the metrics.json document (with truth), else empty.
        checkpoint: the checkpoint used.
        notes: what detection did besides scoring (calibrations), one line each.
    """

    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    threshold: Threshold | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = ""
    notes: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        """A few lines for the terminal: counts, the threshold, the headline metrics."""
        flagged = sum(int(r["decision"]) for r in self.rows)
        lines = []
        if self.threshold is not None:
            lines.append(f"threshold {self.threshold.value:.6g} ({self.threshold.source}); pixel threshold "
                         f"{_number(self.threshold.pixel)}")
        lines.append(f"{flagged} of {len(self.rows)} image(s) flagged anomalous")
        image, pixel = self.metrics.get("image") or {}, self.metrics.get("pixel") or {}
        if image:
            lines.append(f"image AUROC {_metric(image.get('auroc'))}, AUPRC {_metric(image.get('auprc'))}, "
                         f"sensitivity at 95% specificity {_metric(image.get('sensitivity_at_95_specificity'))}")
        if pixel:
            lines.append(f"pixel AUPRC {_metric(pixel.get('auprc'))}, best Dice {_metric(pixel.get('best_dice'))}, "
                         f"Dice at the pixel threshold {_metric(pixel.get('dice_at_threshold'))}")
        written = "scores, maps and metrics" if self.metrics else "scores and maps"
        lines += [f"checkpoint: {self.checkpoint}", f"wrote {written} to {self.out}"]
        return lines


def _metric(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _rows(inputs: Inputs, scored: Scored, threshold: float) -> list[dict[str, Any]]:
    s = scored.scores
    return [{"index": i, "name": inputs.names[i], "patient": inputs.patients[i],
             "score": float(s.score[i]), "residual": float(s.residual[i]), "feature": float(s.feature[i]),
             "decision": int(float(s.score[i]) > threshold),
             "label": "" if inputs.labels is None else int(inputs.labels[i])} for i in range(len(inputs.names))]


def write_scores_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """scores.csv: floats written with ``repr`` so they read back to the same values."""
    columns = ["index", "name", "patient", "score", "residual", "feature", "decision", "label"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows)


def _metrics(inputs: Inputs, scored: Scored, threshold: Threshold) -> dict[str, Any]:
    """Image metrics (with labels) and pixel metrics (with masks) by :mod:`synthmed.metrics.anomaly`."""
    from synthmed.metrics import anomaly as am

    found: dict[str, Any] = {}
    if inputs.labels is not None:
        scores = scored.scores.score.double().numpy()
        found["image"] = {**am.image_metrics(scores, inputs.labels),
                          "at_threshold": _confusion(scores > threshold.value, inputs.labels)}
    if inputs.masks is not None:
        pixel = dict(am.pixel_metrics(scored.maps, inputs.masks, foreground=scored.foreground))
        pixel["dice_at_threshold"] = None if threshold.pixel is None else float(
            am.dice_at(scored.maps, inputs.masks, threshold.pixel, foreground=scored.foreground))
        found["pixel"] = pixel
    return found


def _confusion(decision: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Counts and rates of the decisions at the threshold (None where a class is absent)."""
    positive, negative = labels == 1, labels == 0
    tp, fp = int((decision & positive).sum()), int((decision & negative).sum())
    return {"flagged": int(decision.sum()), "true_positives": tp, "false_positives": fp,
            "sensitivity": tp / int(positive.sum()) if positive.any() else None,
            "specificity": 1 - fp / int(negative.sum()) if negative.any() else None}


def _write_maps(staging: Path, inputs: Inputs, scored: Scored, pixel: float | None) -> float:
    """maps.npz, maps/<name>.png on one scale (returned), binary/<name>.png at the pixel threshold."""
    from PIL import Image

    truth = {} if inputs.masks is None else {"masks": inputs.masks}
    np.savez_compressed(staging / "maps.npz", maps=scored.maps, foreground=scored.foreground,
                        names=np.array(inputs.names), **truth)
    scale = float(scored.maps.max(initial=0.0)) or 1.0
    for i, name in enumerate(inputs.names):
        grey = np.clip(np.rint(scored.maps[i] / scale * 255), 0, 255).astype(np.uint8)
        _save_png(staging / "maps" / f"{name}.png", Image.fromarray(grey))
        if pixel is not None:
            binary = ((scored.maps[i] > pixel) * 255).astype(np.uint8)
            _save_png(staging / "binary" / f"{name}.png", Image.fromarray(binary))
    return scale


def _save_png(path: Path, picture: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, format="PNG")


def _column(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] as (H, W, 3) uint8 (grey broadcast; the first channel of other counts)."""
    from synthmed.data.transforms import to_uint8

    picture = to_uint8(image[:3] if image.shape[0] == 3 else image[:1])
    return np.repeat(picture, 3, axis=-1) if picture.shape[-1] == 1 else picture


def _map_column(values: np.ndarray, scale: float, pixel: float | None) -> np.ndarray:
    """The map in grey on the set's scale, red where above the pixel threshold."""
    grey = np.clip(values / scale * 255, 0, 255)
    picture = np.repeat(grey[..., None], 3, axis=-1)
    if pixel is not None:
        picture[values > pixel] = (255, 0, 0)
    return picture.astype(np.uint8)


def _truth_column(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    picture = image.astype(np.float64)
    picture[mask] = 0.5 * picture[mask] + 0.5 * np.asarray((0, 255, 0), dtype=np.float64)
    return np.rint(picture).astype(np.uint8)


def _row(inputs: Inputs, scored: Scored, i: int, scale: float, pixel: float | None) -> np.ndarray:
    """image | reconstruction | map | truth (when known) of image ``i``, enlarged, with thin gaps."""
    image = _column(inputs.images[i])
    columns = [image, _column(scored.scores.reconstruction[i]), _map_column(scored.maps[i], scale, pixel)]
    if inputs.masks is not None:
        columns.append(_truth_column(image, inputs.masks[i]))
    factor = max(1, SHEET_SIDE // max(image.shape[:2]))
    gap = np.zeros((image.shape[0] * factor, 2, 3), np.uint8)
    parts = [np.repeat(np.repeat(c, factor, axis=0), factor, axis=1) for c in columns]
    return np.concatenate([p for c in parts for p in (c, gap)][:-1], axis=1)


def _write_sheets(staging: Path, inputs: Inputs, scored: Scored, scale: float, pixel: float | None) -> None:
    """sheets/highest-scores.jpg, lowest-scores.jpg and spread.jpg (all.jpg when the set fits one sheet)."""
    from PIL import Image

    from synthmed.translate import spread_indices

    n = len(inputs.names)
    order = np.argsort(-scored.scores.score.numpy(), kind="stable").tolist()
    picks = {"all": list(range(n))} if n <= SHEET_ROWS else {
        "highest-scores": order[:SHEET_ROWS], "lowest-scores": order[::-1][:SHEET_ROWS],
        "spread": spread_indices(n, SHEET_ROWS)}
    (staging / "sheets").mkdir()
    for name, indices in picks.items():
        rows = [_row(inputs, scored, i, scale, pixel) for i in indices]
        gap = np.zeros((2, rows[0].shape[1], 3), np.uint8)
        sheet = np.concatenate([p for r in rows for p in (r, gap)][:-1], axis=0)
        Image.fromarray(sheet).save(staging / "sheets" / f"{name}.jpg", format="JPEG", quality=90)


def _header(model: Any, inputs: Inputs, settings: Settings, threshold: Threshold, checkpoint: CheckpointId
            ) -> dict[str, Any]:
    normal = inputs.normal()
    known = inputs.labels is not None
    return {"run": str(model.run_dir), "recipe": model.recipe.name, "checkpoint": checkpoint.to_dict(),
            "method": settings.method, "settings": {**settings.identity(), "batch_size": settings.batch_size},
            "kappa": float(model.recipe.config.kappa), "source": inputs.source, "threshold": threshold.header(),
            "decision": "anomalous where score > threshold",
            "counts": {"images": len(inputs.names), "normal": int(normal.sum()) if known else None,
                       "anomalous": int((~normal).sum()) if known else None,
                       "with_masks": int(len(inputs.names)) if inputs.masks is not None else 0},
            "truth": inputs.truth or "none", "empty_masks": EMPTY_MASKS,
            "foreground": f"pixels above {FOREGROUND_LEVEL:g} of each image's range, holes filled, largest "
                          "connected component",
            "maps": f"|x - x_hat| mean over channels, masked, Gaussian sigma {settings.smooth:g} px, masked again"}


def _write_outputs(staging: Path, model: Any, inputs: Inputs, scored: Scored, settings: Settings,
                   threshold: Threshold, checkpoint: CheckpointId, result: DetectionResult) -> None:
    result.rows = _rows(inputs, scored, threshold.value)
    write_scores_csv(staging / "scores.csv", result.rows)
    scale = _write_maps(staging, inputs, scored, threshold.pixel)
    _write_sheets(staging, inputs, scored, scale, threshold.pixel)
    header = {**_header(model, inputs, settings, threshold, checkpoint), "map_png_scale": scale}
    (staging / "detection.json").write_text(json.dumps(plain_json(header), indent=2) + "\n", encoding="utf-8")
    if inputs.labels is not None or inputs.masks is not None:
        result.metrics = plain_json({**header, **_metrics(inputs, scored, threshold)})
        (staging / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------- top level


def detect(model: Any, out: str | Path, *, source: str | Path | None = None, split: str | None = None,
           masks: str | Path | None = None, settings: Settings | None = None,
           calibration: Calibration | None = None, checkpoint: CheckpointId, threshold: float | None = None,
           pixel_threshold: float | None = None, recalibrate: bool = False, progress: Progress | None = None,
           note: Note | None = None) -> DetectionResult:
    """Score ``source`` (or the run's ``split``), map it and decide at the stored threshold; see the module doc.

    Args:
        model: a loaded anomaly run (:func:`synthmed.api.load`).
        out: a new or empty folder.
        source: a file, a folder or an npz; or None with ``split``.
        split: ``test`` or ``val``: the run's own held-out images.
        masks: with ``source`` files: a folder of truth masks matched by name.
        settings: method and scoring options [default: f-AnoGAN, smoothing 1 px].
        calibration: the threshold rule asked [default: the stored one, else the 95th percentile].
        checkpoint: the checkpoint loaded (:func:`identify_checkpoint`).
        threshold: a hand-given image threshold (overrides; not stored).
        pixel_threshold: a hand-given pixel threshold.
        recalibrate: calibrate on the val split even when a stored threshold applies.
        progress: called with (done, total) images while scoring.
        note: called with a line for each thing done besides scoring (calibrations).

    Raises:
        SynthmedError: not an anomaly run, a checkpoint the method cannot use, bad options, a non-empty ``out``,
            unreadable inputs, another channel count: one line, nothing written in ``out``.
    """
    settings = (settings or Settings()).check()
    calibration = (calibration or Calibration()).check()
    recipe = check_anomaly_run(model, settings.method)
    if (source is None) == (split is None):
        raise ConfigError("give INPUT (a file, folder or npz to score) or --split test (the run's held-out images), "
                          "one of them")
    if masks is not None and source is None:
        raise ConfigError("--masks goes with INPUT files; --split reads the run's own masks")
    _check_given(threshold, pixel_threshold, recalibrate)
    out = empty_output_folder(out)
    inputs = read_split(model, recipe, split) if split is not None else _read_source(model, recipe, source, masks)
    notes: list[str] = []

    def say(line: str) -> None:
        notes.append(line)
        if note is not None:
            note(line)

    chosen = choose_threshold(model, recipe, checkpoint, settings, calibration, given=threshold,
                              given_pixel=pixel_threshold, recalibrate=recalibrate, progress=progress, note=say)
    if split == "val" and chosen.val is not None:  # just scored for the calibration: the same images and settings
        scored = chosen.val[1]
    else:
        scored = score_images(recipe, inputs.images, settings, progress)
    result = DetectionResult(out=out, threshold=chosen, checkpoint=checkpoint.description, notes=notes)
    write_folder_atomically(out, lambda staging: _write_outputs(staging, model, inputs, scored, settings, chosen,
                                                                checkpoint, result))
    return result


def _check_given(threshold: float | None, pixel_threshold: float | None, recalibrate: bool) -> None:
    """Hand-given thresholds are finite numbers, and a given image threshold leaves nothing to recalibrate."""
    for flag, value in (("--threshold", threshold), ("--pixel-threshold", pixel_threshold)):
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number (got {value})")
    if threshold is not None and recalibrate:
        raise ConfigError("--threshold gives the threshold by hand and --recalibrate asks for a calibrated one; "
                          "choose one")


def _read_source(model: Any, recipe: AnomalyGAN, source: str | Path | None, masks: str | Path | None) -> Inputs:
    path = Path(str(source)).expanduser()
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise DataError(path, "no such file")
        if masks is not None:
            raise ConfigError("--masks goes with image files; an npz brings its own masks array")
        return read_npz_input(model, recipe, path)
    return read_files(recipe, path, masks)

