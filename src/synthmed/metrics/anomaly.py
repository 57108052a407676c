"""Anomaly-detection metrics: per image (scores against normal / anomalous labels) and per pixel (anomaly maps
against lesion masks), and thresholds that turn scores into decisions.

Conventions (one for every function here):

* Higher scores mean "more anomalous"; labels and masks are 1 for anomalous, 0 for normal.
* A threshold ``t`` calls a case (image or pixel) anomalous when ``score > t``. Thresholds chosen from data are
  midpoints between adjacent distinct scores, so ``score > t`` reproduces exactly the split they were chosen for;
  calling everything anomalous is ``t = -inf``.
* AUROC is :func:`synthmed.metrics.classification.roc_auc` (ties count one half); sensitivity at 95% specificity
  is :func:`~synthmed.metrics.classification.sensitivity_at_specificity` (there a case is positive when
  ``score >= t``, every distinct score tried); AUPRC is average precision, the step-wise sum
  ``sum_k (R_k - R_{k-1}) P_k`` over the distinct scores in decreasing order (tied scores form one step), as
  scikit-learn's ``average_precision_score`` (no interpolation, so it is not the trapezoidal area).
* Pixel metrics pool every pixel of every image (inside ``foreground`` when given) into one set: images whose
  mask is empty (normal images) add negative pixels only, so their false positives lower precision and Dice.
* Undefined values (a class missing) are ``None`` with a ``note`` saying why, so a JSON report stays valid; so is
  a report's threshold of -inf (JSON has no infinity), with a note saying that it calls every case anomalous.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from synthmed.errors import ConfigError
from synthmed.metrics.classification import roc_auc, sensitivity_at_specificity

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]
SPECIFICITY = 0.95
#: How images with an empty mask count, for reports (``empty_masks``): here and in ``synthmed detect``.
EMPTY_MASKS = ("an image whose mask is empty is normal (label 0), one with a non-empty mask anomalous (1); pixel "
               "metrics pool every scored pixel (inside the foreground when one is given) of every image, so the "
               "pixels of empty-mask images are negatives only: their false positives lower the pooled Dice and "
               "AUPRC")
THRESHOLD_RULES = ("youden", "f1")


# --- inputs ------------------------------------------------------------------------------------------------------
def _numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _scores(values: ArrayLike, name: str = "scores") -> np.ndarray:
    array = _numpy(values).astype(np.float64).ravel()
    if not np.isfinite(array).all():
        raise ConfigError(f"{name} hold {int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    return array


def _binary(values: ArrayLike, name: str) -> np.ndarray:
    array = _numpy(values)
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        # A 0 / 255 mask or a class index read as "non-zero = anomalous" would be scored silently: insist on 0 / 1.
        raise ConfigError(f"{name} must hold only 0 (normal) and 1 (anomalous); found {np.unique(array)[:6].tolist()}")
    return array.astype(bool)


def _pixels(maps: ArrayLike, masks: ArrayLike, foreground: ArrayLike | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, truth, per-image truth counts) of the pixels scored: maps and masks as (N, H, W), cut to
    ``foreground`` (flattened), and each image's number of anomalous pixels inside it."""
    m, t = _numpy(maps), _binary(masks, "masks")
    if m.shape != t.shape or m.ndim not in (3, 4) or (m.ndim == 4 and m.shape[1] != 1):
        raise ConfigError(f"maps and masks must share one shape, (N, H, W) or (N, 1, H, W); got {m.shape} and "
                          f"{t.shape}")
    m, t = m.reshape(m.shape[0], -1), t.reshape(t.shape[0], -1)
    inside = np.ones_like(t) if foreground is None else _binary(foreground, "foreground")
    if inside.size != t.size:
        raise ConfigError(f"foreground has {inside.size} pixels for maps of {t.size}")
    inside = inside.reshape(t.shape)
    per_image = (t & inside).sum(axis=1)
    return _scores(m[inside], "maps"), t[inside], per_image


# --- ranking curves ------------------------------------------------------------------------------------------------
def _steps(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores in decreasing order with the true and false positives of ``score >= s`` at each.

    One sort (numpy's, O(n log n)): 1.5 M pixels take about 0.2 s.
    """
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    tp = np.cumsum(positives[order], dtype=np.int64)
    # Tied scores form one step: keep the counts at the last case of each run of equal scores.
    last = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    return ordered[last], tp[last], (last + 1) - tp[last]


def _average_precision(tp: np.ndarray, fp: np.ndarray) -> float:
    recall_steps = np.diff(np.r_[0, tp]) / tp[-1]
    return float(np.sum(recall_steps * tp / (tp + fp)))


def _cut_below(distinct: np.ndarray) -> np.ndarray:
    """For each distinct score (decreasing) a threshold t with ``score > t`` true for it and every higher score
    and false for the next lower one: the midpoint, or -inf below the lowest score."""
    if distinct.size == 0:
        return distinct
    hi, lo = distinct[:-1], distinct[1:]
    mid = lo + (hi - lo) / 2.0
    # Adjacent floats: the midpoint may round up to the higher score; the lower one is then the cut.
    mid = np.where(mid < hi, mid, lo)
    return np.r_[mid, -np.inf]


def _note_missing(n_normal: int, n_anomalous: int, what: str) -> str:
    missing = "anomalous" if n_anomalous == 0 else "normal"
    return f"undefined: no {missing} {what} (n_normal={n_normal}, n_anomalous={n_anomalous})"


# --- image level -----------------------------------------------------------------------------------------------
def image_metrics(scores: ArrayLike, labels: ArrayLike) -> dict[str, Any]:
    """AUROC, AUPRC and sensitivity at 95% specificity of per-image anomaly scores.

    Args:
        scores: (N,) anomaly scores, higher meaning more anomalous.
        labels: (N,) 1 (or True) for anomalous images, 0 for normal ones.

    Returns:
        ``auroc``, ``auprc`` (average precision, step-wise), ``sensitivity_at_95_specificity`` (the threshold is
        chosen on these images: optimistic for new ones), ``n_normal``, ``n_anomalous``; the three values are None,
        with a ``note`` saying why, when either class is missing.
    """
    values, positives = _scores(scores), _binary(labels, "labels").ravel()
    if values.shape != positives.shape:
        raise ConfigError(f"{values.size} scores for {positives.size} labels")
    n_anomalous = int(positives.sum())
    n_normal = int(positives.size - n_anomalous)
    out: dict[str, Any] = {"auroc": None, "auprc": None, "sensitivity_at_95_specificity": None,
                           "n_normal": n_normal, "n_anomalous": n_anomalous}
    if n_normal == 0 or n_anomalous == 0:
        out["note"] = _note_missing(n_normal, n_anomalous, "images")
        return out
    _, tp, fp = _steps(values, positives)
    out.update(auroc=roc_auc(values, positives), auprc=_average_precision(tp, fp),
               sensitivity_at_95_specificity=sensitivity_at_specificity(values, positives, SPECIFICITY))
    return out


# --- pixel level ----------------------------------------------------------------------------------------------------
def pixel_metrics(maps: ArrayLike, masks: ArrayLike, foreground: ArrayLike | None = None) -> dict[str, Any]:
    """AUPRC and the best Dice of anomaly maps against lesion masks, every scored pixel of every image pooled.

    Images whose mask is empty contribute negative pixels only (``empty_masks``: :data:`EMPTY_MASKS`): a normal
    image that lights up counts as false positives, as it would in use. The best Dice is exact: the pooled Dice
    ``2 TP / (2 TP + FP + FN)`` of ``maps > t`` at every distinct map value (one sort), not on a grid of thresholds;
    ``best_dice_threshold`` is the midpoint below the distinct value where it peaks (ties: the highest threshold).
    When the peak calls every scored pixel anomalous (t = -inf) it is None, with a ``note``, so the report stays
    valid JSON: ``best_dice`` set and ``best_dice_threshold`` None means -inf.

    Args:
        maps: (N, H, W) or (N, 1, H, W) anomaly maps, higher meaning more anomalous.
        masks: Their lesion masks, the same shape, 0 / 1 (or bool).
        foreground: Optional pixels to score (e.g. brain or field of view), the same shape, 0 / 1; the rest is
            left out of every count.

    Returns:
        ``auprc``, ``best_dice``, ``best_dice_threshold`` (None, with a ``note``, when no scored pixel is
        anomalous, with ``best_dice`` None too; or when it is -inf), ``n_pixels``, ``n_images``,
        ``n_images_with_anomaly``, ``empty_masks``.
    """
    values, truth, per_image = _pixels(maps, masks, foreground)
    out: dict[str, Any] = {"auprc": None, "best_dice": None, "best_dice_threshold": None, "n_pixels": int(values.size),
                           "n_images": int(per_image.size), "n_images_with_anomaly": int((per_image > 0).sum()),
                           "empty_masks": EMPTY_MASKS}
    n_true = int(truth.sum())
    if n_true == 0:
        out["note"] = f"undefined: no anomalous pixel among the {values.size} scored"
        return out
    distinct, tp, fp = _steps(values, truth)
    dice = 2.0 * tp / (tp + fp + n_true)  # 2 TP / (2 TP + FP + FN), as FN = n_true - TP
    best = int(np.argmax(dice))  # the first maximum: the highest threshold of the ties
    cut = float(_cut_below(distinct)[best])
    out.update(auprc=_average_precision(tp, fp), best_dice=float(dice[best]),
               best_dice_threshold=cut if math.isfinite(cut) else None)
    if not math.isfinite(cut):
        out["note"] = "the best Dice calls every scored pixel anomalous (threshold -inf, which JSON cannot hold)"
    return out


def dice_at(maps: ArrayLike, masks: ArrayLike, threshold: float, foreground: ArrayLike | None = None) -> float:
    """Pooled Dice of ``maps > threshold`` against ``masks`` over every scored pixel of every image.

    Convention: NaN when neither the masks nor the prediction has a pixel (0 / 0: nothing to agree on; the mean of
    a report must leave it out, not count it as 1); 0 when only one of them is empty.

    Args:
        maps: (N, H, W) or (N, 1, H, W) anomaly maps.
        masks: Their lesion masks, the same shape, 0 / 1.
        threshold: Pixels above it are called anomalous.
        foreground: Optional pixels to score, the same shape, 0 / 1.
    """
    values, truth, _ = _pixels(maps, masks, foreground)
    predicted = values > threshold
    denominator = int(predicted.sum()) + int(truth.sum())
    if denominator == 0:
        return math.nan
    return 2.0 * int((predicted & truth).sum()) / denominator


# --- thresholds ------------------------------------------------------------------------------------------------------
def percentile_threshold(normal_scores: ArrayLike, percentile: float = 95.0) -> float:
    """The ``percentile``-th percentile of normal images' scores (linear interpolation, numpy's default): about
    ``100 - percentile`` % of normal images score above it, so it needs no anomalous examples.

    Args:
        normal_scores: Scores of normal images only (e.g. the validation split's).
        percentile: In [0, 100].
    """
    values = _scores(normal_scores, "normal_scores")
    if values.size == 0:
        raise ConfigError("a percentile threshold needs the scores of at least one normal image")
    if not 0.0 <= percentile <= 100.0:
        raise ConfigError(f"percentile must be in [0, 100] (got {percentile})")
    return float(np.percentile(values, percentile))


def labelled_threshold(scores: ArrayLike, labels: ArrayLike, rule: str = "youden") -> float:
    """The threshold ``t`` (``score > t`` is anomalous) that maximises ``rule`` on labelled images.

    Candidates: the midpoint between each pair of adjacent distinct scores, -inf (everything anomalous) and the
    highest score (nothing anomalous). Ties between candidates go to the highest threshold (the fewest images
    called anomalous, so the fewest false alarms).

    Args:
        scores: (N,) anomaly scores.
        labels: (N,) 1 for anomalous, 0 for normal; both classes needed.
        rule: ``youden`` (sensitivity + specificity - 1) or ``f1`` (2 TP / (2 TP + FP + FN)).
    """
    if rule not in THRESHOLD_RULES:
        raise ConfigError(f"rule must be one of {', '.join(THRESHOLD_RULES)} (got {rule!r})")
    values, positives = _scores(scores), _binary(labels, "labels").ravel()
    if values.shape != positives.shape:
        raise ConfigError(f"{values.size} scores for {positives.size} labels")
    n_pos, n_neg = int(positives.sum()), int(positives.size - positives.sum())
    if n_pos == 0 or n_neg == 0:
        note = _note_missing(n_neg, n_pos, "images")
        raise ConfigError(f"a labelled threshold needs normal and anomalous images; {note}")
    distinct, tp, fp = _steps(values, positives)
    # Candidate 0 calls nothing anomalous (t = the highest score); candidate k the k highest distinct scores.
    tp, fp = np.r_[0, tp], np.r_[0, fp]
    thresholds = np.r_[distinct[0], _cut_below(distinct)]
    criterion = tp / n_pos - fp / n_neg if rule == "youden" else 2.0 * tp / (tp + fp + n_pos)
    return float(thresholds[int(np.argmax(criterion))])  # the first maximum: the highest threshold
