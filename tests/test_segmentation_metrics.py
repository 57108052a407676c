"""Segmentation metrics (synthmed.metrics.segmentation) on hand-made masks, empty masks included."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from synthmed.metrics.segmentation import (
    CSV_COLUMNS,
    EMPTY_CONVENTIONS,
    Case,
    binary_scores,
    hd95,
    label_scores,
    nan_mean,
    score_cases,
    write_scores_csv,
)


def _mask(shape: tuple[int, ...], *boxes: tuple[slice, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask[box] = True
    return mask


def test_rectangles_dice_iou_sensitivity_specificity() -> None:
    truth = _mask((10, 10), np.s_[2:4, 1:7])  # 2 x 6 = 12 px
    pred = _mask((10, 10), np.s_[2:4, 4:9])  # 2 x 5 = 10 px; overlap columns 4-6: 2 x 3 = 6 px
    s = binary_scores(pred, truth)
    assert s["dice"] == pytest.approx(12 / 22)  # 2 * 6 / (12 + 10)
    assert s["iou"] == pytest.approx(6 / 16)  # 6 / (12 + 10 - 6)
    assert s["sensitivity"] == pytest.approx(6 / 12)
    assert s["specificity"] == pytest.approx(84 / 88)  # 88 negatives, 4 of them predicted
    assert (s["truth_pixels"], s["pred_pixels"]) == (12, 10)
    assert "hd95_mm" not in s
    assert binary_scores(pred.astype(np.uint8), truth.astype(int))["dice"] == s["dice"]


def test_hd95_single_pixels_3_4_5() -> None:
    a, b = _mask((8, 8), np.s_[1, 1]), _mask((8, 8), np.s_[4, 5])
    assert hd95(a, b) == pytest.approx(5.0)
    assert hd95(b, a) == pytest.approx(5.0)
    # Rows 2 mm apart, columns 1 mm: sqrt((3 * 2)^2 + (4 * 1)^2).
    assert hd95(a, b, spacing=(2.0, 1.0)) == pytest.approx(math.sqrt(52.0))
    s = binary_scores(a, b, spacing=(2.0, 1.0))
    assert (s["hd95_px"], s["hd95_mm"]) == (pytest.approx(5.0), pytest.approx(math.sqrt(52.0)))


def test_hd95_single_voxels_3d() -> None:
    a, b = _mask((4, 5, 8), np.s_[0, 0, 0]), _mask((4, 5, 8), np.s_[2, 3, 6])
    assert hd95(a, b) == pytest.approx(7.0)  # sqrt(4 + 9 + 36)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_hd95_squares_offset_by_k(k: int) -> None:
    # 3 x 3 squares: surface = the 8 border pixels. From one square, columns 0 / 1 / 2 lie k / k-1 / k-2 from the
    # other square's near column (3 / 2 / 3 pixels): sorted 8 values, the 95th percentile sits between the two
    # largest, both k. Likewise the other way.
    a = _mask((10, 10), np.s_[3:6, 0:3])
    b = _mask((10, 10), np.s_[3:6, k:k + 3])
    assert hd95(a, b) == pytest.approx(float(k))


def test_hd95_is_max_of_directed_percentiles() -> None:
    truth = _mask((12, 12), np.s_[0, 0:10])  # a 1-px line: every pixel is surface
    pred = _mask((12, 12), np.s_[0, 0:10], np.s_[10, 0])  # the line plus one pixel 10 px away
    # pred -> truth: ten 0s and one 10; the 95th percentile of 11 values is halfway between the 10th and 11th:
    # 5. truth -> pred: all 0. The max of the two is 5 (the percentile of the pooled 21 values would be 0,
    # the plain Hausdorff distance 10).
    assert hd95(pred, truth) == pytest.approx(5.0)


def test_empty_cases() -> None:
    empty, square = np.zeros((6, 6), bool), _mask((6, 6), np.s_[1:3, 1:3])
    both = binary_scores(empty, empty)
    assert (both["dice"], both["iou"], both["hd95_px"]) == (1.0, 1.0, 0.0)
    assert math.isnan(both["sensitivity"]) and both["specificity"] == 1.0
    false_positive = binary_scores(square, empty)  # truth empty, prediction not
    assert (false_positive["dice"], false_positive["iou"]) == (0.0, 0.0)
    assert math.isnan(false_positive["sensitivity"]) and math.isnan(false_positive["hd95_px"])
    assert false_positive["specificity"] == pytest.approx(32 / 36)
    missed = binary_scores(empty, square, spacing=(1.0, 1.0))  # truth non-empty, prediction empty
    assert (missed["dice"], missed["iou"], missed["sensitivity"]) == (0.0, 0.0, 0.0)
    assert math.isnan(missed["hd95_px"]) and math.isnan(missed["hd95_mm"])
    assert hd95(empty, empty) == 0.0 and math.isnan(hd95(square, empty)) and math.isnan(hd95(empty, square))
    assert "both empty" in EMPTY_CONVENTIONS


def test_specificity_undefined_without_background() -> None:
    full = np.ones((3, 3), bool)
    s = binary_scores(full, full)
    assert s["dice"] == 1.0 and math.isnan(s["specificity"]) and s["hd95_px"] == 0.0


def test_fov_excluding_disagreement_gives_perfect_scores() -> None:
    truth = _mask((8, 8), np.s_[2:5, 2:5])
    pred = _mask((8, 8), np.s_[2:5, 2:5], np.s_[0, 7])  # one extra pixel in the corner
    assert binary_scores(pred, truth)["dice"] == pytest.approx(18 / 19)  # 2 * 9 / (10 + 9)
    fov = np.ones((8, 8), bool)
    fov[0, 7] = False
    s = binary_scores(pred, truth, fov=fov)
    assert (s["dice"], s["iou"], s["sensitivity"], s["hd95_px"], s["pred_pixels"]) == (1.0, 1.0, 1.0, 0.0, 9)
    assert s["specificity"] == 1.0  # 54 background pixels inside the FOV, none predicted


def test_three_class_label_map() -> None:
    truth = np.zeros((6, 6), np.int64)
    truth[0:2, 0:3] = 1  # class 1: 6 px
    truth[4:6, 3:6] = 2  # class 2: 6 px
    pred = truth.copy()
    pred[1, 0:3] = 0  # class 1 loses a row: 3 px left, all correct
    pred[3, 3:6] = 2  # class 2 gains a row: 9 px, 6 correct
    scores = label_scores(pred, truth, num_classes=3)
    assert set(scores) == {1, 2}
    assert scores[1]["dice"] == pytest.approx(6 / 9) and scores[1]["sensitivity"] == pytest.approx(0.5)
    assert scores[2]["dice"] == pytest.approx(12 / 15) and scores[2]["iou"] == pytest.approx(6 / 9)
    assert scores[1]["hd95_px"] == pytest.approx(1.0) and scores[2]["hd95_px"] == pytest.approx(1.0)


def _slice(*boxes: tuple[slice, ...]) -> np.ndarray:
    return _mask((5, 5), *boxes).astype(np.int64)


def test_per_patient_pooling_differs_from_per_image_mean() -> None:
    square = np.s_[1:3, 1:3]
    cases = [
        Case("p1_s1", "p1", _slice(square), _slice(square)),  # Dice 1
        Case("p1_s2", "p1", _slice(), _slice(square)),  # Dice 0 (missed)
        ("p2_s1", "p2", _slice(square), _slice(square), None, None),  # plain tuples work too
    ]
    rows, summary = score_cases(cases, num_classes=2, n_boot=200)
    assert [r["dice"] for r in rows] == [1.0, 0.0, 1.0]
    c1 = summary["classes"][1]
    assert c1["per_image"]["dice"] == {"mean": pytest.approx(2 / 3), "n": 3, "n_excluded": 0}
    patients = c1["per_patient"]["patients"]
    # p1 pooled: TP 4, FP 0, FN 4 -> 8 / 12; the mean of its two images would be 0.5.
    assert patients["p1"]["dice"] == pytest.approx(8 / 12) and patients["p1"]["n_images"] == 2
    assert patients["p2"]["dice"] == 1.0
    assert c1["per_patient"]["mean"]["dice"]["mean"] == pytest.approx((8 / 12 + 1) / 2)
    assert c1["pooled"]["dice"] == pytest.approx(16 / 20)  # TP 8, FN 4 over all pixels
    assert c1["per_image"]["hd95_px"] == {"mean": 0.0, "n": 2, "n_excluded": 1}
    assert (summary["n_images"], summary["n_patients"]) == (3, 2)


def test_per_patient_hd95_stacks_slices() -> None:
    # Truth in slice 0, prediction one slice further at the same (row, col): 1 slice step apart in 3-D,
    # while each image alone has one empty mask (HD95 NaN, left out of the per-image mean).
    cases = [Case("s0", "p", _slice(), _slice(np.s_[2, 2]), None, (0.5, 0.5)),
             Case("s1", "p", _slice(np.s_[2, 2]), _slice(), None, (0.5, 0.5))]
    _, summary = score_cases(cases, num_classes=2, slice_spacing=3.0, n_boot=200)
    c1 = summary["classes"][1]
    assert c1["per_image"]["hd95_px"] == {"mean": pytest.approx(math.nan, nan_ok=True), "n": 0, "n_excluded": 2}
    patient = c1["per_patient"]["patients"]["p"]
    assert patient["hd95_px"] == pytest.approx(1.0) and patient["hd95_mm"] == pytest.approx(3.0)
    assert patient["hd95_note"] is None and c1["per_patient"]["dice_interval"] is None  # one patient


def test_per_patient_hd95_nan_for_unequal_slices() -> None:
    cases = [Case("a", "p", _slice(np.s_[1, 1]), _slice(np.s_[1, 1])),
             Case("b", "p", np.ones((4, 4), np.int64), np.ones((4, 4), np.int64))]
    _, summary = score_cases(cases, num_classes=2, n_boot=200)
    patient = summary["classes"][1]["per_patient"]["patients"]["p"]
    assert math.isnan(patient["hd95_px"]) and "differ in shape" in patient["hd95_note"]
    assert patient["dice"] == 1.0


def test_bootstrap_interval_contains_mean() -> None:
    rng = np.random.default_rng(0)
    truth = _slice(np.s_[1:4, 1:4])
    cases = []
    for i in range(8):
        pred = truth.copy()
        pred[rng.integers(0, 5, size=i), rng.integers(0, 5, size=i)] ^= 1  # more errors for later patients
        cases.append(Case(f"img{i}", f"patient{i}", pred, truth))
    _, summary = score_cases(cases, num_classes=2, n_boot=500, seed=3)
    per_patient = summary["classes"][1]["per_patient"]
    low, high = per_patient["dice_interval"]
    assert low <= per_patient["mean"]["dice"]["mean"] <= high and low < high
    _, again = score_cases(cases, num_classes=2, n_boot=500, seed=3)
    assert again["classes"][1]["per_patient"]["dice_interval"] == [low, high]  # seeded


def test_scores_csv(tmp_path) -> None:
    label = np.zeros((5, 5), np.int64)
    label[1:3, 1:3], label[3, 3] = 1, 2
    cases = [Case("a.png", "p1", label, label, None, (0.5, 0.5)), Case("b.png", "p2", np.zeros_like(label), label)]
    rows, _ = score_cases(cases, num_classes=3, n_boot=200)
    path = tmp_path / "out" / "scores.csv"
    write_scores_csv(path, rows)
    with open(path, newline="") as fh:
        read = list(csv.reader(fh))
    assert tuple(read[0]) == CSV_COLUMNS == ("image", "patient", "class", "dice", "iou", "sensitivity",
                                             "specificity", "hd95_px", "hd95_mm", "truth_pixels", "pred_pixels")
    assert len(read) == 1 + 2 * 2  # two images x two foreground classes
    first = dict(zip(CSV_COLUMNS, read[1], strict=True))
    assert (first["image"], first["class"], float(first["dice"]), first["hd95_mm"]) == ("a.png", "1", 1.0, "0.0")
    last = dict(zip(CSV_COLUMNS, read[-1], strict=True))
    assert (last["hd95_px"], last["hd95_mm"], last["pred_pixels"]) == ("", "", "0")  # NaN -> blank
    assert [p.name for p in path.parent.iterdir()] == ["scores.csv"]  # no temporary file left


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"\(4, 4\) vs \(4, 5\)"):
        binary_scores(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        hd95(np.full((4, 4), 255), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"labels outside \[0, 3\).*max 3"):
        label_scores(np.full((4, 4), 3), np.zeros((4, 4), np.int64), num_classes=3)
    with pytest.raises(ValueError, match="2 positive numbers"):
        hd95(np.zeros((4, 4)), np.zeros((4, 4)), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="fov shape"):
        binary_scores(np.zeros((4, 4)), np.zeros((4, 4)), fov=np.ones((3, 3)))
    with pytest.raises(ValueError, match="2-D"):
        hd95(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="^bad.png: pred_labels and truth_labels shapes differ"):
        score_cases([Case("bad.png", "p", np.zeros((2, 2), int), np.zeros((3, 3), int))], num_classes=2)


def test_nan_mean_counts_excluded() -> None:
    assert nan_mean([1.0, math.nan, 3.0]) == {"mean": 2.0, "n": 2, "n_excluded": 1}


def _brute_hd95(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> float:
    def surface(m: np.ndarray) -> np.ndarray:  # mask pixels with a 4-neighbour outside the mask or the image
        padded = np.pad(m, 1)
        inner = np.ones_like(m)
        for axis in range(m.ndim):
            for shift in (-1, 1):
                inner &= np.roll(padded, shift, axis=axis)[tuple(slice(1, -1) for _ in range(m.ndim))]
        return np.argwhere(m & ~inner) * np.asarray(spacing)

    d = cdist(surface(a), surface(b))
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def _random_masks(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (ndimage.binary_opening(rng.random(shape) > 0.6), ndimage.binary_opening(rng.random(shape) > 0.55))


@pytest.mark.parametrize("shape", [(30, 40), (8, 16, 20)])
def test_hd95_matches_brute_force(shape: tuple[int, ...]) -> None:
    a, b = _random_masks(1, shape)
    spacing = tuple(0.5 + 0.5 * i for i in range(len(shape)))
    assert hd95(a, b) == pytest.approx(_brute_hd95(a, b, (1.0,) * len(shape)))
    assert hd95(a, b, spacing) == pytest.approx(_brute_hd95(a, b, spacing))


@pytest.mark.parametrize("shape", [(30, 40), (8, 16, 20)])
def test_hd95_matches_monai(shape: tuple[int, ...]) -> None:
    pytest.importorskip("monai")
    import torch
    from monai.metrics import compute_hausdorff_distance

    a, b = _random_masks(2, shape)
    spacing = tuple(0.7 + 0.4 * i for i in range(len(shape)))
    for sp in (None, spacing):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = compute_hausdorff_distance(torch.from_numpy(a)[None, None].float(),
                                             torch.from_numpy(b)[None, None].float(),
                                             include_background=True, percentile=95, spacing=sp).item()
        assert hd95(a, b, sp) == pytest.approx(ref, rel=1e-5)
