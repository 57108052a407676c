"""``synthmed detect``: an anomaly run (``--recipe anomaly``) applied to files, an npz or its own held-out split:
a score per image, an anomaly map per image, and a decision at a threshold stored with the model.

Scores (:meth:`synthmed.recipes.anomaly.AnomalyGAN.score`): ``fanogan`` (one encoder pass, ``score = residual +
kappa * feature``; needs a checkpoint after the GAN phase, step > ``gan_steps``) or ``anogan`` (a latent search
per image with G and D only; ``--anogan-steps``, ``--anogan-lambda``, ``--anogan-restarts``).

Maps: the residual |x - G(.)| averaged over channels, inside a foreground mask of the body (or brain): pixels
brighter than ``foreground_level`` (``--foreground-level``, default :data:`FOREGROUND_LEVEL`) of the image's own
range above its darkest pixel, holes filled, the largest connected component (the whole image when it is flat;
``foreground_level`` 0: no mask, every pixel counts). The map is masked, Gaussian-smoothed with ``smooth`` px
(default 1.0: enough to merge the speckle of a GAN's reconstruction into blobs without blurring away a lesion of a
few pixels; 0 turns it off) and masked again, so nothing outside the body counts. Maps are at the model's size.

Thresholds are calibrated on the run's validation split and stored with the model, one file per method,
``RUN/anomaly/threshold-<method>.json`` (written atomically): the image threshold (rule ``percentile``: that
percentile, default 95, of the normal images' scores; ``youden`` / ``f1``: the best cut on labelled val images),
the pixel threshold for binary maps (the 99th percentile of the normal images' map values inside the foreground;
with ``youden`` / ``f1`` and val masks, the threshold of the best pooled Dice; the percentile rule, with a note,
when no val lesion pixel lies inside the foreground), the split, counts, the checkpoint (file, step, weights
SHA-256), the scoring settings (:meth:`Settings.identity`: method, AnoGAN search, smoothing, foreground level). A
threshold of -inf (``f1`` or best Dice calling every val image or pixel anomalous) is stored as ``"value": null``
with ``"infinite": "-inf"`` and a note (JSON has no infinity) and read back as -inf. A stored threshold is applied
only to the checkpoint and settings it was calibrated for, and when no other rule or percentile is asked;
otherwise, or when none is stored, detection calibrates first (and says so), with the rule asked, else the stored
one's, else ``percentile``. ``recalibrate`` forces it; a hand-given threshold overrides (and is not stored). A run
trained on split ``all``, or with an empty val split, has nothing to calibrate on: give the threshold by hand.

Normal and anomalous: as training read them, by :meth:`synthmed.recipes.anomaly.AnomalyGAN.normal_rows` (the run's
``normal`` option): with ``auto`` / ``empty-mask``, an image whose mask is empty
(:func:`~synthmed.recipes.anomaly.has_lesion`) is normal, one with a non-empty mask anomalous; with a class, that
class (resolved against the run's class names; an input's named classes are matched by name) is normal, every
other class anomalous. Where the rule says every image is normal (``all``, or ``auto`` on data without masks), or
the truth it needs is missing, masks still give the truth (a non-empty mask is anomalous); class labels alone give
none, and the header says so. Without truth every image of the val split counts as normal (the percentile rule
only).

Inputs: a folder or file (PNG, TIFF, JPEG, BMP, GIF, DICOM, NIfTI, npy; truth masks matched by name with
``masks``), an npz of named arrays (optional ``masks``, ``labels``, ``patient``; read with the run's keys), or the
run's held-out ``split`` (read as the run read its data: ``normalize``, ``size``, channels). Files and npz arrays
are read with the run's recorded intensity mapping: files as :mod:`synthmed.segment` reads them
(``normalize="patient"``: per first sub-folder); an npz with the run's fixed range whatever its dtype (a run whose
mapping is per image, e.g. DICOM windows or NIfTI percentiles, is refused: give files) and the run's ``normalize``
(per ``patient`` array, else per image) after resizing, as the loaders do. Another channel count is refused;
another size is resized to the model's (a non-square image centre-cropped to square first, as the training loaders
do, so resizing always works) with one warning for the set.

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
from synthmed.metrics.anomaly import EMPTY_MASKS
from synthmed.recipes.anomaly import METHODS, NORMAL_CHOICES, AnomalyGAN, AnomalyScores, has_lesion, residual_map
from synthmed.segment import patient_of, plain_json, read_truth_file, split_names
from synthmed.translate import check_same_size, file_stem, input_files, targets_for

#: Foreground: pixels above this fraction of the image's own range (from its darkest pixel); 0: the whole image.
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

Progress = Callable[[int, int], None]
Note = Callable[[str], None]


class RunNotWritable(SynthmedError):
    """The run folder refuses the calibrated threshold (read-only): nothing is written; give one by hand."""


# ------------------------------------------------------------------------------------ settings and records


@dataclass
class Settings:
    """How images are scored and mapped; a stored threshold applies only to the same :meth:`identity`.

    Args:
        method: ``fanogan`` or ``anogan``.
        smooth: Gaussian sigma of the maps in px (0: none).
        foreground_level: the foreground's fraction of each image's range, in [0, 1) (0: the whole image).
        anogan_steps: AnoGAN search steps per image.
        anogan_lambda: weight of AnoGAN's feature loss.
        anogan_restarts: AnoGAN starting points per image.
        anogan_lr: Adam learning rate of the search.
        seed: seed of the search's starting points.
        batch_size: images per pass (not part of the identity: the recipe draws every image's starting points up
            front, so no score depends on it).
    """

    method: str = "fanogan"
    smooth: float = SMOOTH
    foreground_level: float = FOREGROUND_LEVEL
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
            (not 0.0 <= self.foreground_level < 1.0,
             f"--foreground-level must be in [0, 1): a fraction of each image's range, 0 for the whole image (got "
             f"{self.foreground_level})"),
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
        """What a score, a map or a threshold depends on besides the checkpoint and the run's data: the method, the
        maps' smoothing and foreground level, and for AnoGAN its search (steps, lambda, restarts, lr, seed); not
        ``batch_size``."""
        found: dict[str, Any] = {"method": self.method, "smooth": float(self.smooth),
                                 "foreground_level": float(self.foreground_level)}
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
        """``self``, or a one-line :class:`ConfigError` naming the bad option (an unknown rule, a percentile
        outside (0, 100))."""
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


def check_anomaly_run(model: Any, method: str, checkpoint: str | Path | None = None) -> AnomalyGAN:
    """The run's recipe if it is an anomaly model at a step where ``method`` can score; one line otherwise.

    Args:
        model: a loaded run (:func:`synthmed.api.load`).
        method: ``fanogan`` (needs the encoder phase: step > ``gan_steps``) or ``anogan`` (G and D: step >= 1).
        checkpoint: the checkpoint asked (``"best"``, a JSON path, or None), for the message.
    """
    recipe = model.recipe
    if not isinstance(recipe, AnomalyGAN):
        raise SynthmedError(f"{model.run_dir}: recipe {getattr(recipe, 'name', '?')!r} is not an anomaly model; "
                            "train --recipe anomaly")
    gan_steps = int(recipe.config.gan_steps)
    best = checkpoint is not None and (str(checkpoint) == "best" or Path(str(checkpoint)).name == "best.json")
    if method == "fanogan" and model.step <= gan_steps and best:
        # --eval-every scores the generator by FID, and G is frozen after the GAN phase: best.* is a GAN-phase step.
        raise ConfigError(f"{model.run_dir}: best.* (step {model.step}) was chosen by FID during the GAN phase "
                          f"(gan_steps={gan_steps}), and the encoder was not trained at that checkpoint; use "
                          "--checkpoint latest for f-AnoGAN (or --method anogan with best)")
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
    range, holes filled, the largest connected component; a flat image, or any image at ``level`` 0, is
    foreground everywhere."""
    grey = images.float().mean(dim=1).numpy()
    if level <= 0:
        return np.ones(grey.shape, bool)
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
    foreground = foreground_mask(images, settings.foreground_level)
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


def fit_to_model(images: torch.Tensor, side: int) -> torch.Tensor:
    """(N, C, H, W) images at ``side`` x ``side``: as they are, or centre-cropped to square and resized as the
    training loaders do for ``--size`` (:func:`warn_resized` tells the user, once for a set)."""
    if tuple(images.shape[-2:]) == (side, side):
        return images
    return resize(center_crop_square(images.float()), side)


def warn_resized(sizes: list[tuple[int, int]], side: int, what: str | Path) -> None:
    """One warning for a set of images, when any was resized to the model's ``side`` px: how many, from what.

    Args:
        sizes: each image's (width, height) as read.
        side: the model's side.
        what: the input (file, folder or npz), for the message.
    """
    resized = [size for size in sizes if size != (side, side)]
    if not resized:
        return
    shown = sorted(set(resized))
    listed = ", ".join(f"{w}x{h}" for w, h in shown[:3]) + (", ..." if len(shown) > 3 else "")
    crop = " (non-square ones centre-cropped to square first)" if any(w != h for w, h in resized) else ""
    warnings.warn(f"{what}: {len(resized)} of {len(sizes)} images resized from {listed} px to the model's "
                  f"{side}x{side} px{crop}; maps are at the model's size", stacklevel=3)


def _sizes(images: torch.Tensor) -> list[tuple[int, int]]:
    return [(int(images.shape[-1]), int(images.shape[-2]))] * int(images.shape[0])


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


def image_truth(recipe: AnomalyGAN, masks: torch.Tensor | None, labels: torch.Tensor | None, source: str
                ) -> tuple[np.ndarray | None, str]:
    """Image labels (1 anomalous, 0 normal) by the rule training kept its normal images by
    (:meth:`AnomalyGAN.normal_rows`, the run's ``normal`` option), and how they were made, in words.

    Where that rule calls every image normal (``all``, or ``auto`` on data without masks) or lacks the truth it
    reads (a class without labels, ``empty-mask`` without masks), masks still give the truth
    (:func:`~synthmed.recipes.anomaly.has_lesion`: a non-empty mask is anomalous); class labels alone give none.

    Args:
        recipe: the run's recipe.
        masks: (N, H, W) or (N, 1, H, W) truth masks at the model's size, or None.
        labels: (N,) class indices in the run's classes, or None.
        source: the images, for messages.
    """
    if masks is None and labels is None:
        return None, ""
    choice = str(recipe.config.normal)
    decides = labels is not None if choice not in NORMAL_CHOICES else (masks is not None or choice != "empty-mask")
    if decides:
        keep, described = recipe.normal_rows(masks, labels, source)
        if keep is not None:
            return (~keep).numpy().astype(np.int64), (f"the run's normal={choice!r}: {described} are normal, the "
                                                      "rest anomalous")
    if masks is not None:
        return has_lesion(masks).numpy().astype(np.int64), "from masks: a non-empty mask is anomalous"
    why = (f"normal='empty-mask' reads normal images from masks, and {source} has none" if choice == "empty-mask"
           else f"normal={choice!r} trained on every image" + (" (its data had no masks)" if choice == "auto" else ""))
    return None, f"none: the run's {why}, so class labels do not say which images are normal; give masks for truth"


def _run_classes(recipe: AnomalyGAN, labels: torch.Tensor, names: tuple[str, ...], what: str | Path
                 ) -> torch.Tensor:
    """An input's class labels as the run's class indices: matched by name where both name their classes.

    Raises:
        DataError: the input holds a class the run does not know.
    """
    known = tuple(recipe.data_info.class_names)
    if not names or not known or names == known:
        return labels
    used = [names[i] for i in sorted({int(v) for v in labels.tolist()})]
    unknown = [name for name in used if name not in known]
    if unknown:
        raise DataError(what, f"holds class {unknown[0]!r}, which is not one of the run's classes "
                              f"({', '.join(known)})")
    return torch.tensor([known.index(name) if name in known else -1 for name in names])[labels]


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
    files = input_files(root, task="score")
    base = root if root.is_dir() else root.parent
    mapping = input_mapping(recipe)
    read = [read_image_file(path, mapping, channels=recipe.data_info.channels) for path in files]
    relatives = [p.relative_to(base).with_name(file_stem(p)) for p in files]
    normalize_files(read, mapping, [patient_of(r) for r in relatives])
    truths = targets_for(files, root, masks, "truth masks", any_format=True) if masks is not None else None
    side = recipe.train_size
    parts = [_file_part(f, r, None if truths is None else truths[i], side)
             for i, (f, r) in enumerate(zip(read, relatives, strict=True))]
    warn_resized([size for f in read for size in _sizes(f.images)], side, root)
    images = torch.cat([p[0] for p in parts])
    names = [name for p in parts for name in p[1]]
    patients = [patient for p in parts for patient in p[2]]
    truth = None if truths is None else np.concatenate([p[3] for p in parts])
    labels, words = image_truth(recipe, None if truth is None else torch.from_numpy(truth), None, str(source))
    return Inputs(images, names, patients, truth, labels, str(source), words)


def _file_part(file: ImageFile, relative: Path, truth_path: Path | None, side: int
               ) -> tuple[torch.Tensor, list[str], list[str], np.ndarray | None]:
    """One file's slices at the model's size, their names and patients, and its truth (S, side, side)."""
    slices = int(file.images.shape[0])
    stem = relative.as_posix()
    names = [stem] if slices == 1 else [f"{stem}_{s:03d}" for s in range(slices)]
    patient = relative.parts[0] if len(relative.parts) > 1 else (relative.name if slices > 1 else "")
    truth = None if truth_path is None else fit_masks(read_truth_mask(truth_path, file), side)
    return fit_to_model(file.images, side), names, [patient] * slices, truth


def read_npz_input(model: Any, recipe: AnomalyGAN, path: Path) -> Inputs:
    """An npz of named arrays (images, optional masks / labels / patient ids, under the run's keys) read with the
    run's recorded intensity mapping: its fixed range whatever the file's dtype, as folders are read, and its
    ``normalize`` (per ``patient`` array, else per image) after resizing, as the loaders normalise.

    Raises:
        DataError: the run's mapping is per image (an npz cannot be read that way; files can), a MedMNIST-layout
            file scaled otherwise than the run's images, another channel count.
    """
    from synthmed.data import load_dataset
    from synthmed.data.npz import is_medmnist_layout, open_npz

    data = model.config.data
    mapping = input_mapping(recipe)
    run_name = model.run_dir.name
    if mapping.kind != "fixed":
        raise DataError(path, f"{run_name} mapped its images' intensities per image ({mapping.kind}), which an npz "
                              "cannot reproduce; give the images as files (a folder) to read them as the run did")
    keys = list(open_npz(path).keys())
    medmnist = is_medmnist_layout(keys) and data.image_key == "images" and "images" not in keys  # as read_npz
    options = {k: getattr(data, k) for k in ("image_key", "label_key", "mask_key", "patient_key", "channels")}
    data_set = load_dataset(path, split="all", intensity_range=None if medmnist else (mapping.low, mapping.high),
                            normalize="none", **options)
    read = mapping_from_info(data_set.info)
    if read is not None and (read.low, read.high) != (mapping.low, mapping.high):
        raise DataError(path, f"holds MedMNIST-layout images, scaled {read.low:g}..{read.high:g}, but {run_name} "
                              f"read its images with {mapping.low:g}..{mapping.high:g}; save them as named arrays "
                              "(images=...)")
    _check_channels(int(data_set.images.shape[1]), recipe, path, run_name)
    rows = [int(m.get("index", i)) for i, m in enumerate(data_set.meta or [{}] * len(data_set))]
    return _from_dataset(recipe, data_set, [f"{row:04d}" for row in rows], str(path), path, normalize=mapping)


def check_split(split: str) -> None:
    """Refuse a split detection cannot score: only the held-out ``test`` and ``val``."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split}: score a held-out split, test or val (the run trained on its train split)")


def check_request(source: str | Path | None, split: str | None, masks: str | Path | None) -> None:
    """Refuse, in one line and before anything is loaded, what detection cannot serve: INPUT and ``split`` both or
    neither, a split other than test or val, ``masks`` without INPUT files."""
    if (source is None) == (split is None):
        raise ConfigError("give INPUT (a file, folder or npz to score) or --split test (the run's held-out images), "
                          "one of them")
    if split is not None:
        check_split(split)
    if masks is not None and source is None:
        raise ConfigError("--masks goes with INPUT files; --split reads the run's own masks")


def read_split(model: Any, recipe: AnomalyGAN, split: str) -> Inputs:
    """The run's held-out ``split`` read as the run read its data (its options: ``normalize``, ``size``, ...).

    Raises:
        ConfigError: ``split`` is not test or val, the run trained on split ``all`` (nothing held out), or the
            split is empty (e.g. ``val_fraction`` 0).
    """
    from synthmed.data import load_training_set

    data = model.config.data
    check_split(split)
    if data.split == "all":
        raise ConfigError(f"{model.run_dir}: the run trained on split 'all', so its data hold nothing out for "
                          f"--split {split}; give held-out images as INPUT (and a threshold with --threshold)")
    options = data.loader_options()
    options.update(split=split)
    try:
        data_set = load_training_set(data.source, **options)
    except DataError as exc:
        if not exc.problem.startswith(f"split '{split}' is empty"):
            raise
        data_set = None
    if data_set is None or len(data_set) == 0:
        raise ConfigError(_empty_split(model, split))
    names = split_names(list(data_set.meta or []), len(data_set), split)
    return _from_dataset(recipe, data_set, names, f"{data.source} ({split} split)", data.source)


def _empty_split(model: Any, split: str) -> str:
    """Why the run's ``split`` is empty, and what to do instead."""
    fraction = float(getattr(model.config.data, f"{split}_fraction", 0.0) or 0.0)
    why = f"{split}_fraction {fraction:g}" if fraction == 0 else "the data's own split holds none"
    if split == "val":
        return (f"{model.run_dir}: the run's val split is empty ({why}), so there is nothing to calibrate a "
                "threshold on (or to score); give the threshold by hand (--threshold VALUE) and the images as INPUT")
    return f"{model.run_dir}: the run's {split} split is empty ({why}); give the images to score as INPUT"


def _from_dataset(recipe: AnomalyGAN, data_set: Any, names: list[str], source: str, what: str | Path,
                  normalize: IntensityMapping | None = None) -> Inputs:
    """Inputs of a loaded image set: images at the model's size (then normalised by ``normalize``'s option, as
    the loaders normalise after resizing), truth by :func:`image_truth`."""
    from synthmed.data.normalize import normalize_images

    side = recipe.train_size
    if len(data_set) == 0:
        raise DataError(what, f"holds no images for {source}")
    images = fit_to_model(data_set.images, side)
    warn_resized(_sizes(data_set.images), side, what)
    if normalize is not None:
        images = normalize_images(images, normalize.normalize, data_set.patients, normalize.normalize_percentiles)
    patients = [""] * len(names) if data_set.patients is None else [str(p) for p in data_set.patients]
    masks = None if data_set.masks is None else fit_masks(data_set.masks[:, 0].numpy() > 0.5, side)
    labels = data_set.labels
    if labels is not None and str(recipe.config.normal) not in NORMAL_CHOICES:
        labels = _run_classes(recipe, labels, tuple(data_set.info.class_names), what)
    truth, words = image_truth(recipe, None if masks is None else torch.from_numpy(masks), labels, source)
    return Inputs(images, names, patients, masks, truth, source, words)


# -------------------------------------------------------------------------------------------- thresholds


def threshold_path(run_dir: Path, method: str) -> Path:
    """Where the threshold of ``method`` is stored with the model."""
    return run_dir / "anomaly" / f"threshold-{method}.json"


def read_threshold(run_dir: Path, method: str) -> dict[str, Any] | None:
    """The stored threshold record of ``method``; None when there is none (or it cannot be read: recalibrated)."""
    path = threshold_path(run_dir, method)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(record, dict) and record.get("format") == THRESHOLD_FORMAT):
            return None
        threshold_value(record["pixel"])  # every value readable
        return record if threshold_value(record) is not None else None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def json_threshold(entry: dict[str, Any], what: str) -> dict[str, Any]:
    """``entry`` with its ``value`` as JSON holds it: an infinite one (JSON has none) as null, with ``infinite``
    (``"-inf"`` / ``"inf"``) and a ``note`` (``-inf: every image anomalous``); :func:`threshold_value` reads it.

    Args:
        entry: a dict with ``value``, a threshold or None.
        what: what the threshold decides on (``image``, ``pixel``), for the note.
    """
    value = entry.get("value")
    if value is None or math.isfinite(value):
        return entry
    sign = "-inf" if value < 0 else "inf"
    says = f"{sign}: {'every' if value < 0 else 'no'} {what} anomalous (JSON has no infinity)"
    return {**entry, "value": None, "infinite": sign, "note": "; ".join(filter(None, (entry.get("note"), says)))}


def threshold_value(entry: dict[str, Any] | None) -> float | None:
    """The threshold of an entry :func:`json_threshold` wrote: ``value``, or -inf / inf where ``infinite`` says
    so; None when there is none."""
    if not entry:
        return None
    if entry.get("value") is None:
        return float(entry["infinite"]) if entry.get("infinite") in ("-inf", "inf") else None
    return float(entry["value"])


def json_text(document: Any) -> str:
    """``document`` as strict JSON (NaN and infinities as null: no ``NaN`` / ``Infinity`` tokens), indented; infinite
    thresholds say why themselves (:func:`json_threshold`)."""
    return json.dumps(plain_json(document), indent=2, allow_nan=False) + "\n"


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
    rule and val masks holding anomalies, the threshold of the best pooled Dice (-inf when that calls every pixel
    anomalous), or, with a note, the percentile when no lesion pixel lies inside the foreground."""
    from synthmed.metrics import anomaly as am

    note = None
    if rule.rule != "percentile" and val.masks is not None and val.masks.any():
        best = am.pixel_metrics(scored.maps, val.masks, foreground=scored.foreground)
        if best["best_dice"] is not None:
            cut = best["best_dice_threshold"]  # None with a best Dice: -inf, every pixel (JSON has no infinity)
            return {"rule": "best-dice", "percentile": rule.pixel_percentile,
                    "value": -math.inf if cut is None else float(cut)}
        note = ("no val lesion pixel lies inside the foreground, so there is no Dice to maximise: the percentile of "
                "the normal val images' map values instead")
    normal = val.normal()
    values = scored.maps[normal][scored.foreground[normal]]
    value = am.percentile_threshold(values, rule.pixel_percentile) if values.size else None
    found = {"rule": "percentile", "percentile": rule.pixel_percentile, "value": value}
    return found if note is None else {**found, "note": note}


def store_threshold(run_dir: Path, found: dict[str, Any], val: Inputs, checkpoint: CheckpointId,
                    settings: Settings, split: str = "val") -> dict[str, Any]:
    """The full record of a calibration, written atomically to :func:`threshold_path` (infinite thresholds as
    :func:`json_threshold` writes them); returned as written.

    Raises:
        RunNotWritable: the run folder cannot be written (read-only): one line naming it, and the threshold just
            calibrated to give by hand.
    """
    normal = val.normal()
    record = {"format": THRESHOLD_FORMAT, "method": settings.method, **found, "split": split,
              "counts": {"images": len(val.names), "normal": int(normal.sum()),
                         "anomalous": int((~normal).sum()) if val.labels is not None else None},
              "truth": val.truth or "none: every val image counts as normal",
              "checkpoint": checkpoint.to_dict(), "settings": settings.identity(),
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    record = plain_json({**json_threshold(record, "image"), "pixel": json_threshold(found["pixel"], "pixel")})
    path = threshold_path(run_dir, settings.method)
    try:
        atomic_write_text(path, json_text(record))
    except OSError as exc:
        value = threshold_value(record)
        given = f"--threshold {value!r}, the one just calibrated" if value is not None and math.isfinite(value) \
            else "--threshold VALUE"
        raise RunNotWritable(f"{path.parent}: cannot store the calibrated threshold there ({exc.strerror or exc}); "
                             f"make the run folder writable, or give the threshold by hand ({given})") from None
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
    val: tuple[Inputs, Scored] | None = field(default=None, repr=False)  # images and maps: too long to print

    def header(self) -> dict[str, Any]:
        """The thresholds as ``detection.json`` and ``metrics.json`` record them: ``source``, ``value``,
        ``pixel_value`` and the stored ``record``; infinite ones as null, named in ``infinite``, with a ``note``."""
        image = json_threshold({"value": self.value}, "image")
        pixel = json_threshold({"value": self.pixel}, "pixel")
        found = {"source": self.source, "value": image["value"], "pixel_value": pixel["value"], "record": self.record}
        infinite = {key: e["infinite"] for key, e in (("value", image), ("pixel_value", pixel)) if "infinite" in e}
        if infinite:
            found.update(infinite=infinite, note="; ".join(e["note"] for e in (image, pixel) if "note" in e))
        return found


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
        pixel = given_pixel if given_pixel is not None else threshold_value((kept or {}).get("pixel"))
        return Threshold(float(given), None if pixel is None else float(pixel), kept, "given")
    if record is not None and reason is None and not recalibrate:
        pixel = given_pixel if given_pixel is not None else threshold_value(record["pixel"])
        return Threshold(_image_value(record), pixel, record, "stored")
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
    value, stored_pixel = _image_value(stored), threshold_value(stored["pixel"])
    say(f"stored threshold {value:.6g} (pixel {_number(stored_pixel)}) in "
        f"{threshold_path(model.run_dir, settings.method)}")
    if stored["pixel"].get("note"):
        say(f"pixel threshold: {stored['pixel']['note']}")
    pixel = given_pixel if given_pixel is not None else stored_pixel
    return Threshold(value, pixel, stored, "calibrated", (val, scored))


def _image_value(record: dict[str, Any]) -> float:
    """The image threshold of a stored record (:func:`read_threshold` and :func:`store_threshold` ensure one)."""
    value = threshold_value(record)
    if value is None:
        raise SynthmedError(f"threshold record without an image threshold: {record}")
    return value


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
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)  # one per image
    threshold: Threshold | None = None
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)
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
    """The ``detection.json`` document (and the head of ``metrics.json``): the run, checkpoint, method and
    settings, the thresholds, counts, how the truth was made, and the conventions of the maps and pixel scores."""
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
            "foreground": _foreground_words(settings.foreground_level),
            "maps": f"|x - x_hat| mean over channels, masked, Gaussian sigma {settings.smooth:g} px, masked again"}


def _foreground_words(level: float) -> str:
    if level <= 0:
        return "the whole image (--foreground-level 0: no mask)"
    return f"pixels above {level:g} of each image's range, holes filled, largest connected component"


def _write_outputs(staging: Path, model: Any, inputs: Inputs, scored: Scored, settings: Settings,
                   threshold: Threshold, checkpoint: CheckpointId, result: DetectionResult) -> None:
    result.rows = _rows(inputs, scored, threshold.value)
    write_scores_csv(staging / "scores.csv", result.rows)
    scale = _write_maps(staging, inputs, scored, threshold.pixel)
    _write_sheets(staging, inputs, scored, scale, threshold.pixel)
    header = {**_header(model, inputs, settings, threshold, checkpoint), "map_png_scale": scale}
    (staging / "detection.json").write_text(json_text(header), encoding="utf-8")
    if inputs.labels is not None or inputs.masks is not None:
        result.metrics = json.loads(json_text({**header, **_metrics(inputs, scored, threshold)}))
        (staging / "metrics.json").write_text(json_text(result.metrics), encoding="utf-8")


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
        settings: method and scoring options [default: f-AnoGAN, smoothing 1 px, foreground level 0.1].
        calibration: the threshold rule asked [default: the stored one, else the 95th percentile].
        checkpoint: the checkpoint loaded (:func:`identify_checkpoint`).
        threshold: a hand-given image threshold (overrides; not stored).
        pixel_threshold: a hand-given pixel threshold.
        recalibrate: calibrate on the val split even when a stored threshold applies.
        progress: called with (done, total) images while scoring.
        note: called with a line for each thing done besides scoring (calibrations).

    Raises:
        SynthmedError: not an anomaly run, a checkpoint the method cannot use, bad options, a non-empty ``out``,
            unreadable inputs, another channel count, nothing to calibrate on, a read-only run folder
            (:class:`RunNotWritable`): one line, nothing written in ``out``.
    """
    settings = (settings or Settings()).check()
    calibration = (calibration or Calibration()).check()
    check_request(source, split, masks)
    recipe = check_anomaly_run(model, settings.method, checkpoint.file)
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

