"""Anomaly metrics (synthmed.metrics.anomaly) on hand-computed cases: image AUROC / AUPRC / sensitivity, pixel AUPRC
and the exact best Dice, empty masks as negatives only, missing classes as None with a note, and thresholds."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from synthmed.errors import ConfigError
from synthmed.metrics.anomaly import (
    EMPTY_MASKS,
    dice_at,
    image_metrics,
    labelled_threshold,
    percentile_threshold,
    pixel_metrics,
)

#: scikit-learn's documentation example: AUROC 0.75, average precision 0.8333.
SCORES = [0.1, 0.4, 0.35, 0.8]
LABELS = [0, 0, 1, 1]
#: One 2 x 3 image; by hand (descending: .9+ .8+ .7- .3+ .2- .1-) the pooled Dice 2TP / (TP + FP + 3) is
#: .5, .8, 2/3, 6/7, .75, 2/3: best 6/7 calling the top four, cut at (.3 + .2) / 2; AP = (1 + 1 + 3/4) / 3.
MAP = [[0.9, 0.8, 0.1], [0.7, 0.2, 0.3]]
MASK = [[1, 1, 0], [0, 0, 1]]


def _brute_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """sum_k (R_k - R_{k-1}) P_k with one step per distinct score, written the slow way."""
    total, previous_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        called = scores >= t
        tp = int((called & (labels == 1)).sum())
        recall = tp / int(labels.sum())
        total += (recall - previous_recall) * tp / int(called.sum())
        previous_recall = recall
    return total


def test_image_metrics_by_hand() -> None:
    out = image_metrics(np.array(SCORES), torch.tensor(LABELS))
    assert out["auroc"] == pytest.approx(0.75)
    assert out["auprc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # Two normal images: 95% specificity means both below the cut, so only the 0.8 image is found.
    assert out["sensitivity_at_95_specificity"] == pytest.approx(0.5)
    assert (out["n_normal"], out["n_anomalous"]) == (2, 2) and "note" not in out


def test_tied_scores_form_one_step() -> None:
    # The tie at 0.5 (one anomalous, one normal) is one step of AP and counts one half in the AUROC.
    out = image_metrics([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1])
    assert out["auroc"] == pytest.approx(3.5 / 4)
    assert out["auprc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_average_precision_matches_its_definition_and_sklearn() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 12, 200) / 4.0  # many ties
    labels = (rng.random(200) < 0.3).astype(int)
    auprc = image_metrics(scores, labels)["auprc"]
    assert auprc == pytest.approx(_brute_average_precision(scores, labels), abs=1e-12)
    metrics = pytest.importorskip("sklearn.metrics")
    assert auprc == pytest.approx(metrics.average_precision_score(labels, scores), abs=1e-12)
    assert image_metrics(scores, labels)["auroc"] == pytest.approx(metrics.roc_auc_score(labels, scores))


@pytest.mark.parametrize(("labels", "missing"), [([0, 0, 0], "anomalous"), ([1, 1, 1], "normal")])
def test_a_missing_class_gives_none_and_a_note(labels: list[int], missing: str) -> None:
    out = image_metrics([0.1, 0.2, 0.3], labels)
    assert out["auroc"] is None and out["auprc"] is None and out["sensitivity_at_95_specificity"] is None
    assert f"no {missing} images" in out["note"]
    assert out["n_normal"] + out["n_anomalous"] == 3


def test_pixel_metrics_by_hand_for_both_layouts() -> None:
    for maps, masks in ((np.array([MAP]), np.array([MASK])), (torch.tensor([[MAP]]), torch.tensor([[MASK]]).bool())):
        out = pixel_metrics(maps, masks)
        assert out["best_dice"] == pytest.approx(6 / 7)
        assert out["best_dice_threshold"] == pytest.approx(0.25)
        assert out["auprc"] == pytest.approx((1 + 1 + 0.75) / 3)
        assert (out["n_pixels"], out["n_images"], out["n_images_with_anomaly"]) == (6, 1, 1)
        assert dice_at(maps, masks, out["best_dice_threshold"]) == pytest.approx(out["best_dice"])


def test_an_empty_mask_adds_negatives_only() -> None:
    normal_map = [[0.95, 0.0, 0.0], [0.0, 0.0, 0.0]]
    maps, masks = np.array([MAP, normal_map]), np.array([MASK, np.zeros((2, 3))])
    out = pixel_metrics(maps, masks)
    assert out["empty_masks"] == EMPTY_MASKS and "negatives only" in EMPTY_MASKS
    assert (out["n_pixels"], out["n_images"], out["n_images_with_anomaly"]) == (12, 2, 1)
    # The normal image's bright pixel is the top false positive: Dice at the same cut 6 / (3 + 2 + 3).
    assert out["best_dice"] == pytest.approx(0.75) and out["best_dice_threshold"] == pytest.approx(0.25)
    assert out["auprc"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)
    # Leaving that pixel out of the foreground gives back the one-image figures (the zeros rank below every lesion).
    foreground = np.ones_like(masks)
    foreground[1, 0, 0] = 0
    inside = pixel_metrics(maps, masks, foreground=foreground)
    assert inside["n_pixels"] == 11
    assert inside["best_dice"] == pytest.approx(6 / 7) and inside["auprc"] == pytest.approx((1 + 1 + 0.75) / 3)


def test_best_dice_is_the_maximum_over_every_threshold() -> None:
    rng = np.random.default_rng(1)
    masks = rng.random((5, 8, 8)) < 0.2
    masks[2] = False  # one normal image
    maps = np.round(masks * 0.3 + rng.random((5, 8, 8)), 1)  # rounded: ties
    out = pixel_metrics(maps, masks)
    cuts = np.r_[np.unique(maps) - 1e-9, np.unique(maps)]
    assert out["best_dice"] == pytest.approx(max(dice_at(maps, masks, t) for t in cuts), abs=1e-12)
    assert dice_at(maps, masks, out["best_dice_threshold"]) == pytest.approx(out["best_dice"], abs=1e-12)
    assert out["auprc"] == pytest.approx(_brute_average_precision(maps.ravel(), masks.ravel().astype(int)))


def test_no_anomalous_pixel_gives_none_and_a_note() -> None:
    out = pixel_metrics(np.random.default_rng(0).random((2, 4, 4)), np.zeros((2, 4, 4)))
    assert out["auprc"] is None and out["best_dice"] is None and out["best_dice_threshold"] is None
    assert "no anomalous pixel" in out["note"] and out["n_images_with_anomaly"] == 0


def test_a_best_dice_that_calls_every_pixel_is_null_with_a_note() -> None:
    # One distinct map value: the only cut calls every pixel anomalous (t = -inf), which JSON cannot hold.
    masks = np.ones((1, 2, 3))
    masks[0, 0, 0] = 0
    out = pixel_metrics(np.full((1, 2, 3), 0.5), masks)
    assert out["best_dice"] == pytest.approx(10 / 11) and out["best_dice_threshold"] is None
    assert "every scored pixel" in out["note"] and "-inf" in out["note"]
    json.dumps(out, allow_nan=False)  # a valid JSON report
    assert dice_at(np.full((1, 2, 3), 0.5), masks, -math.inf) == pytest.approx(out["best_dice"])


def test_dice_at_conventions() -> None:
    assert dice_at([MAP], [MASK], 0.85) == pytest.approx(2 * 1 / (1 + 3))
    assert dice_at([MAP], [MASK], 1.0) == 0.0  # nothing predicted, lesions present
    assert math.isnan(dice_at([MAP], [np.zeros((2, 3))], 1.0))  # both empty: undefined
    assert dice_at([MAP], [np.zeros((2, 3))], 0.5) == 0.0


def test_a_million_and_a_half_pixels_take_well_under_seconds() -> None:
    rng = np.random.default_rng(2)
    masks = rng.random((24, 256, 256)) < 0.02
    maps = (masks * 0.5 + rng.random((24, 256, 256))).astype(np.float32)
    started = time.perf_counter()
    out = pixel_metrics(maps, masks)
    assert time.perf_counter() - started < 5.0  # one sort; about 0.3 s on a busy 2-core machine
    assert out["n_pixels"] == 24 * 256 * 256 and 0.0 < out["best_dice"] <= 1.0


def test_thresholds_by_hand() -> None:
    # Youden J of score > t: 0 (t = .8), .5 (t = .6), 0 (.375), .5 (.225), 0 (-inf): the tie goes to the higher t.
    assert labelled_threshold(SCORES, LABELS, "youden") == pytest.approx(0.6)
    # F1: 0, 2/3, 1/2, 4/5, 2/3.
    assert labelled_threshold(SCORES, LABELS, "f1") == pytest.approx(0.225)
    # Uninformative scores: F1 is best calling everything anomalous.
    assert labelled_threshold([0.3, 0.3, 0.3], [1, 1, 0], "f1") == -math.inf
    assert percentile_threshold([5, 1, 4, 2, 3], 50) == pytest.approx(3.0)
    assert percentile_threshold(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])) == pytest.approx(4.8)  # linear, 95th


def test_midpoints_between_adjacent_floats_still_cut_between_them() -> None:
    low = 1.0
    high = float(np.nextafter(low, 2.0))
    t = labelled_threshold([high, low], [1, 0])
    assert low <= t < high  # score > t separates them


@pytest.mark.parametrize(("call", "message"), [
    (lambda: image_metrics([0.1, 0.2], [0, 2]), "only 0 .* and 1"),
    (lambda: image_metrics([0.1, float("nan")], [0, 1]), "NaN"),
    (lambda: image_metrics([0.1, 0.2, 0.3], [0, 1]), "3 scores for 2 labels"),
    (lambda: pixel_metrics(np.zeros((1, 2, 3)), np.zeros((1, 3, 2))), "share one shape"),
    (lambda: pixel_metrics(np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 3))), "share one shape"),
    (lambda: pixel_metrics(np.zeros((1, 2, 3)), np.full((1, 2, 3), 255)), "only 0"),
    (lambda: pixel_metrics(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), foreground=np.ones((1, 2, 2))),
     "foreground has 4 pixels"),
    (lambda: labelled_threshold([0.1, 0.2], [0, 1], "accuracy"), "rule must be one of youden, f1"),
    (lambda: labelled_threshold([0.1, 0.2], [0, 0]), "needs normal and anomalous"),
    (lambda: percentile_threshold([]), "at least one normal"),
    (lambda: percentile_threshold([1.0], 101), r"percentile must be in \[0, 100\]"),
])
def test_bad_input_is_a_one_line_error(call: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        call()  # type: ignore[operator]
    assert "\n" not in str(error.value)
