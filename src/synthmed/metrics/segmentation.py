"""Segmentation metrics: Dice, IoU, sensitivity, specificity and HD95 of label maps against their ground truth.

Masks are numpy arrays, 2-D (H, W) or 3-D (D, H, W): binary masks (bool or 0 / 1) for :func:`hd95` and
:func:`binary_scores`, integer label maps (0 = background, 1 .. K-1 = foreground classes) for :func:`label_scores`
and :func:`score_cases`. An optional field-of-view mask (``fov``, the DRIVE FOV masks) restricts every metric to
the pixels inside it: counts are taken inside it, and both masks are cut to it before their surfaces are found.

* :func:`hd95`: 95th percentile Hausdorff distance, MONAI's ``compute_hausdorff_distance(percentile=95)``.
* :func:`binary_scores`, :func:`label_scores`: the scores of one image (or volume), of one class or of each.
* :func:`score_cases`: per image rows, per image means, per patient scores (each patient's images pooled into
  one volume, with a bootstrap interval of the mean Dice) and scores pooled over all pixels.
* :func:`write_scores_csv`: the rows as one CSV.

The values given to empty masks are :data:`EMPTY_CONVENTIONS`; NaN marks an undefined value, which every mean
leaves out and counts (``n_excluded``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

from synthmed.io import atomic_write_text
from synthmed.metrics.stats import paired_bootstrap_interval

EMPTY_CONVENTIONS = (
    "Empty masks (after the field of view is applied): truth and prediction both empty -> Dice = IoU = 1 and "
    "HD95 = 0 (they agree; no surface is misplaced), sensitivity NaN (no truth pixel to detect); truth empty, "
    "prediction not -> Dice = IoU = 0, sensitivity NaN, HD95 NaN (no truth surface to measure against); truth "
    "non-empty, prediction empty -> Dice = IoU = sensitivity = 0, HD95 NaN (no predicted surface). Specificity "
    "is NaN when the image has no background pixel. MONAI gives NaN / inf in the HD95 cases (NaN for both empty); "
    "here NaN marks every undefined value, means leave NaN out and report how many they left out (n_excluded)."
)

# Each empty-mask convention lives in exactly one of these four constants (see EMPTY_CONVENTIONS).
BOTH_EMPTY_OVERLAP = 1.0  # Dice and IoU when truth and prediction are both empty: their only zero denominator
BOTH_EMPTY_HD95 = 0.0  # neither mask has a surface, so none is misplaced
ONE_EMPTY_HD95 = math.nan  # one surface with nothing to measure it against (MONAI: inf or NaN)
UNDEFINED_RATE = math.nan  # sensitivity without truth pixels, specificity without background pixels

PERCENTILE = 95.0
METRICS = ("dice", "iou", "sensitivity", "specificity", "hd95_px", "hd95_mm")
CSV_COLUMNS = ("image", "patient", "class", *METRICS, "truth_pixels", "pred_pixels")
N_BOOT = 10_000
BOOT_SEED = 0


class Case(NamedTuple):
    """One scored image or volume; plain tuples in this field order are accepted too."""

    name: str
    patient: str
    pred: np.ndarray
    truth: np.ndarray
    fov: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None


# --- input checks ----------------------------------------------------------------------------------------------
def _check_ndim(array: np.ndarray, name: str) -> None:
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2-D (H, W) or 3-D (D, H, W), got shape {array.shape}")


def _as_bool(mask: Any, name: str) -> np.ndarray:
    array = np.asarray(mask)
    _check_ndim(array, name)
    if array.dtype == bool:
        return array
    # A 0 / 255 mask or a probability map read as "non-zero = positive" would be scored silently: insist on 0 / 1.
    if not ((array == 0) | (array == 1)).all():
        raise ValueError(f"{name} must contain only 0 and 1 (found {np.unique(array)[:6].tolist()})")
    return array.astype(bool)


def _binary_pair(pred: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_bool(pred, "pred"), _as_bool(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred and truth shapes differ: {p.shape} vs {t.shape}")
    return p, t


def _fov(fov: Any, shape: tuple[int, ...]) -> np.ndarray:
    if fov is None:
        return np.ones(shape, dtype=bool)
    f = _as_bool(fov, "fov")
    if f.shape != shape:
        raise ValueError(f"fov shape {f.shape} does not match masks of shape {shape}")
    return f


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be {ndim} positive numbers (one per axis), got {tuple(spacing)}")
    return values


def _check_labels(pred: Any, truth: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background and one class), got {num_classes}")
    p, t = np.asarray(pred), np.asarray(truth)
    for name, array in (("pred_labels", p), ("truth_labels", t)):
        _check_ndim(array, name)
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise ValueError(f"{name} must be an integer label array, got dtype {array.dtype}")
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(f"{name} has labels outside [0, {num_classes}): min {array.min()}, max {array.max()}")
    if p.shape != t.shape:
        raise ValueError(f"pred_labels and truth_labels shapes differ: {p.shape} vs {t.shape}")
    return p, t


# --- HD95 ------------------------------------------------------------------------------------------------------
def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4- (2-D) or 6- (3-D) connected neighbour outside the mask or outside the array."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    # border_value=0: a mask touching the array's edge has its surface there (MONAI pads with zeros alike).
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    return tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(idx.min(axis=0), idx.max(axis=0), strict=True))


def _hd95_bool(p: np.ndarray, t: np.ndarray, spacing: tuple[float, ...] | None) -> float:
    if not p.any() and not t.any():
        return BOTH_EMPTY_HD95
    if not p.any() or not t.any():
        return ONE_EMPTY_HD95
    # Distances between surface pixels do not depend on what lies outside the union's bounding box: crop (speed).
    box = _bounding_box(p | t)
    sp, st = _surface(p[box]), _surface(t[box])
    pred_to_truth = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
    truth_to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
    # MONAI: the larger of the two directed 95th percentiles (linear interpolation, as torch.quantile).
    return float(max(np.percentile(pred_to_truth, PERCENTILE), np.percentile(truth_to_pred, PERCENTILE)))


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Symmetric 95th percentile Hausdorff distance between the surfaces of two binary masks.

    The surface of a mask is the mask minus its erosion (4-connected in 2-D, 6-connected in 3-D, pixels beyond
    the array's edge counted as outside). Each surface pixel of one mask gets its Euclidean distance to the
    nearest surface pixel of the other (``scipy.ndimage.distance_transform_edt``); HD95 is the larger of the two
    directed 95th percentiles, as MONAI's ``compute_hausdorff_distance(percentile=95)`` (MONAI >= 1.3) computes it.

    Args:
        pred: Predicted mask, (H, W) or (D, H, W), bool or 0 / 1.
        truth: Ground-truth mask of the same shape.
        spacing: Pixel (voxel) size along each axis, in the array's axis order (e.g. mm); None for pixels.

    Returns:
        HD95 in pixels, or in the units of ``spacing``; both masks empty -> 0, one empty -> NaN
        (see :data:`EMPTY_CONVENTIONS`).
    """
    p, t = _binary_pair(pred, truth)
    return _hd95_bool(p, t, _check_spacing(spacing, p.ndim))


# --- overlap scores --------------------------------------------------------------------------------------------
def _counts(p: np.ndarray, t: np.ndarray, f: np.ndarray) -> np.ndarray:
    """[TP, FP, FN, TN] inside the field of view ``f``."""
    tp, fp, fn = np.sum(p & t & f), np.sum(p & ~t & f), np.sum(~p & t & f)
    return np.array([tp, fp, fn, np.sum(f) - tp - fp - fn], dtype=np.int64)


def _overlap(num: float, den: float) -> float:
    # Dice's and IoU's denominators are 0 only when truth and prediction are both empty.
    return num / den if den else BOTH_EMPTY_OVERLAP


def _rate(num: float, den: float) -> float:
    return num / den if den else UNDEFINED_RATE


def _scores_from_counts(counts: np.ndarray) -> dict[str, float]:
    tp, fp, fn, tn = (float(c) for c in counts)
    return {
        "dice": _overlap(2 * tp, 2 * tp + fp + fn),
        "iou": _overlap(tp, tp + fp + fn),
        "sensitivity": _rate(tp, tp + fn),
        "specificity": _rate(tn, tn + fp),
        "truth_pixels": int(tp + fn),
        "pred_pixels": int(tp + fp),
    }


def _score_binary(p: np.ndarray, t: np.ndarray, f: np.ndarray, spacing: tuple[float, ...] | None,
                  ) -> tuple[dict[str, float], np.ndarray]:
    """Scores (``hd95_mm`` only with a spacing) and counts of boolean masks already checked."""
    p, t = p & f, t & f
    counts = _counts(p, t, f)
    scores = _scores_from_counts(counts)
    scores["hd95_px"] = _hd95_bool(p, t, None)
    if spacing is not None:
        scores["hd95_mm"] = _hd95_bool(p, t, spacing)
    return scores, counts


def binary_scores(pred: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None,
                  spacing: Sequence[float] | None = None) -> dict[str, float]:
    """Dice, IoU, sensitivity, specificity and HD95 of one binary mask against its truth.

    Args:
        pred: Predicted mask, (H, W) or (D, H, W), bool or 0 / 1.
        truth: Ground-truth mask of the same shape.
        fov: Optional field-of-view mask of the same shape; pixels outside it are ignored by every metric
            (both masks are cut to it before HD95).
        spacing: Pixel size along each axis (mm); adds ``hd95_mm``.

    Returns:
        ``dice`` 2TP / (2TP + FP + FN), ``iou`` TP / (TP + FP + FN), ``sensitivity`` TP / (TP + FN),
        ``specificity`` TN / (TN + FP), ``hd95_px``, ``hd95_mm`` (with ``spacing`` only), ``truth_pixels`` and
        ``pred_pixels`` (inside the FOV); empty masks follow :data:`EMPTY_CONVENTIONS`.
    """
    p, t = _binary_pair(pred, truth)
    return _score_binary(p, t, _fov(fov, p.shape), _check_spacing(spacing, p.ndim))[0]


def label_scores(pred_labels: np.ndarray, truth_labels: np.ndarray, num_classes: int,
                 fov: np.ndarray | None = None, spacing: Sequence[float] | None = None,
                 ) -> dict[int, dict[str, float]]:
    """:func:`binary_scores` of each foreground class 1 .. ``num_classes`` - 1, one class against the rest.

    Args:
        pred_labels: Predicted label map, (H, W) or (D, H, W), integers in [0, ``num_classes``).
        truth_labels: Ground-truth label map of the same shape.
        num_classes: Number of classes, background (0) included.
        fov: Optional field-of-view mask of the same shape.
        spacing: Pixel size along each axis (mm); adds ``hd95_mm``.

    Returns:
        ``{class: scores}`` for each foreground class.
    """
    p, t = _check_labels(pred_labels, truth_labels, num_classes)
    f, sp = _fov(fov, p.shape), _check_spacing(spacing, p.ndim)
    return {c: _score_binary(p == c, t == c, f, sp)[0] for c in range(1, num_classes)}


# --- many images -----------------------------------------------------------------------------------------------
def nan_mean(values: Iterable[float]) -> dict[str, float | int]:
    """Mean of the non-NaN values: ``{"mean", "n" (values used), "n_excluded" (NaN values left out)}``."""
    array = np.asarray(list(values), dtype=np.float64)
    kept = array[~np.isnan(array)]
    return {"mean": float(kept.mean()) if kept.size else math.nan, "n": int(kept.size),
            "n_excluded": int(array.size - kept.size)}


def _patient_hd95(cases: list[Case], c: int, slice_spacing: float | None) -> tuple[float, float, str | None]:
    """Per-patient (HD95 px, HD95 mm, why NaN or None) of class ``c``: one image as is, 2-D slices stacked."""
    if len(cases) == 1:
        # One image is its own volume; a (1, H, W) stack would turn every pixel into surface (slab caps).
        case = cases[0]
        p, t = _class_masks(case, c)
        return _hd95_bool(p, t, None), _hd95_bool(p, t, case.spacing) if case.spacing else math.nan, None
    shapes = {np.shape(case.truth) for case in cases}
    if any(len(s) != 2 for s in shapes):
        return math.nan, math.nan, "several images, not all 2-D slices: no single volume to stack"
    if len(shapes) > 1:
        return math.nan, math.nan, f"slices differ in shape {sorted(shapes)}: cannot stack them into a volume"
    masks = [_class_masks(case, c) for case in cases]
    p, t = np.stack([m[0] for m in masks]), np.stack([m[1] for m in masks])
    spacings = {case.spacing for case in cases}
    mm = math.nan
    if slice_spacing is not None and len(spacings) == 1 and None not in spacings:
        mm = _hd95_bool(p, t, (float(slice_spacing), *spacings.pop()))
    return _hd95_bool(p, t, None), mm, None


def _class_masks(case: Case, c: int) -> tuple[np.ndarray, np.ndarray]:
    f = _fov(case.fov, np.shape(case.truth))
    return (np.asarray(case.pred) == c) & f, (np.asarray(case.truth) == c) & f


def _check_case(case: Case, num_classes: int) -> Case:
    try:
        p, t = _check_labels(case.pred, case.truth, num_classes)
        f = None if case.fov is None else _fov(case.fov, p.shape)
        spacing = _check_spacing(case.spacing, p.ndim)
    except ValueError as exc:  # name the image: one bad file among hundreds
        raise ValueError(f"{case.name}: {exc}") from None
    return Case(str(case.name), str(case.patient), p, t, f, spacing)


def _per_patient(by_patient: dict[str, list[int]], cases: list[Case], counts: dict[int, list[np.ndarray]],
                 c: int, slice_spacing: float | None) -> dict[str, dict[str, Any]]:
    patients = {}
    for patient, idx in by_patient.items():
        scores: dict[str, Any] = _scores_from_counts(np.sum([counts[c][i] for i in idx], axis=0))
        px, mm, note = _patient_hd95([cases[i] for i in idx], c, slice_spacing)
        scores.update(hd95_px=px, hd95_mm=mm, n_images=len(idx), hd95_note=note)
        patients[patient] = scores
    return patients


def _summary_of_class(rows: list[dict[str, Any]], patients: dict[str, dict[str, Any]], counts: list[np.ndarray],
                      n_boot: int, confidence: float, seed: int) -> dict[str, Any]:
    dice = [s["dice"] for s in patients.values() if not math.isnan(s["dice"])]
    interval = (list(paired_bootstrap_interval(dice, n_boot=n_boot, confidence=confidence, seed=seed))
                if len(dice) >= 2 else None)
    return {
        "per_image": {m: nan_mean(r[m] for r in rows) for m in METRICS},
        "per_patient": {"mean": {m: nan_mean(s[m] for s in patients.values()) for m in METRICS},
                        "dice_interval": interval, "patients": patients},
        "pooled": _scores_from_counts(np.sum(counts, axis=0)),
    }


def score_cases(cases: Iterable[Case | tuple], num_classes: int, *, slice_spacing: float | None = None,
                n_boot: int = N_BOOT, confidence: float = 0.95, seed: int = BOOT_SEED,
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Scores of many label maps: one row per image and foreground class, and a summary per class.

    Per image: :func:`label_scores` of each image, averaged over images (NaN left out and counted). Per patient:
    each patient's images pooled into one volume: Dice, IoU, sensitivity and specificity from the patient's
    summed pixel counts (per-patient Dice as Buda et al. 2019 report it); HD95 of the patient's 2-D slices
    stacked, in the order given, into a (D, H, W) volume with a slice step of 1 px (a patient with one image
    keeps that image's HD95; slices of unequal shape, or several 3-D volumes, give NaN with the reason in
    ``hd95_note``). The per-patient mean Dice has a percentile bootstrap interval over patients
    (:func:`synthmed.metrics.stats.paired_bootstrap_interval`, ``n_boot`` replicates, fixed ``seed``).
    Pooled: counts summed over all pixels of all images (global Dice, as DRIVE results are reported).

    Args:
        cases: ``Case`` (or tuples ``(name, patient, pred, truth, fov, spacing)``); ``pred`` and ``truth`` are
            integer label maps (H, W) or (D, H, W), ``fov`` an optional 0 / 1 mask, ``spacing`` optional mm.
        num_classes: Number of classes, background (0) included.
        slice_spacing: Distance between a patient's stacked 2-D slices in mm: gives per-patient ``hd95_mm``
            when all the patient's slices share one spacing; otherwise per-patient ``hd95_mm`` is NaN.
        n_boot: Bootstrap replicates of the per-patient mean Dice interval.
        confidence: Coverage of that interval.
        seed: Seed of the bootstrap.

    Returns:
        ``(rows, summary)``: rows with the :data:`CSV_COLUMNS` keys (``hd95_mm`` NaN without spacing); summary
        ``{"classes": {c: {"per_image": {metric: {mean, n, n_excluded}}, "per_patient": {"mean": ...,
        "dice_interval": [low, high] or None, "patients": {patient: scores}}, "pooled": scores}}, "n_images",
        "n_patients", "bootstrap": {...}, "empty_conventions": EMPTY_CONVENTIONS}``.
    """
    checked = [_check_case(Case(*case), num_classes) for case in cases]
    if not checked:
        raise ValueError("score_cases needs at least one case")
    names = [case.name for case in checked]
    if len(set(names)) != len(names):
        raise ValueError(f"image names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    classes = range(1, num_classes)
    rows: list[dict[str, Any]] = []
    counts: dict[int, list[np.ndarray]] = {c: [] for c in classes}
    by_patient: dict[str, list[int]] = {}
    for i, case in enumerate(checked):
        by_patient.setdefault(case.patient, []).append(i)
        f = _fov(case.fov, case.truth.shape)
        for c in classes:
            scores, n = _score_binary(case.pred == c, case.truth == c, f, case.spacing)
            rows.append({"image": case.name, "patient": case.patient, "class": c, "hd95_mm": math.nan, **scores})
            counts[c].append(n)
    summary_classes = {}
    for c in classes:
        patients = _per_patient(by_patient, checked, counts, c, slice_spacing)
        class_rows = [r for r in rows if r["class"] == c]
        summary_classes[c] = _summary_of_class(class_rows, patients, counts[c], n_boot, confidence, seed)
    summary = {"classes": summary_classes, "n_images": len(checked), "n_patients": len(by_patient),
               "bootstrap": {"n_boot": n_boot, "confidence": confidence, "seed": seed, "over": "patients"},
               "empty_conventions": EMPTY_CONVENTIONS}
    return rows, summary


def _cell(value: Any) -> str:
    # Blank for NaN, as the project's other CSVs (viz.curves reads blank cells back as NaN).
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else repr(float(value))
    return str(value)


def write_scores_csv(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write the rows of :func:`score_cases` to one CSV (header :data:`CSV_COLUMNS`), atomically.

    Args:
        path: Destination file; its folder is created.
        rows: Dicts with the :data:`CSV_COLUMNS` keys; a missing key, or NaN, is written as a blank cell.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(column, math.nan)) for column in CSV_COLUMNS])
    atomic_write_text(Path(path), buffer.getvalue())


__all__ = [
    "CSV_COLUMNS",
    "EMPTY_CONVENTIONS",
    "METRICS",
    "Case",
    "binary_scores",
    "hd95",
    "label_scores",
    "nan_mean",
    "score_cases",
    "write_scores_csv",
]
