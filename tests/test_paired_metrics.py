"""Paired metrics (synthmed.metrics.paired) on hand-computed cases, SSIM against scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthmed.metrics.paired import dice, mae, paired_report, per_image_dice, pixel_scores, psnr, ssim


def test_mae_psnr_hand_case() -> None:
    output, target = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert mae(output, target) == 1.0
    assert psnr(output, target, data_range=2.0) == pytest.approx(10 * math.log10(4))  # MSE 1


def test_mask_restricts_pixels() -> None:
    target = np.zeros((1, 1, 2, 2))
    output = np.array([[[[1.0, 3.0], [0.0, 0.0]]]])
    mask = np.array([[[[1, 0], [1, 1]]]])
    assert mae(output, target) == 1.0
    assert mae(output, target, mask) == pytest.approx(1 / 3)
    assert psnr(output, target, data_range=1.0, mask=mask) == pytest.approx(10 * math.log10(3))  # MSE 1/3


def test_psnr_is_mean_of_per_image_values_and_inf_safe() -> None:
    target = np.zeros((2, 1, 2, 2))
    output = target.copy()
    output[1] = 0.5  # image 1: MSE 0.25 -> 10 log10(4); image 0 perfect
    assert psnr(output[1:], target[1:], data_range=1.0) == pytest.approx(10 * math.log10(4))
    output[0] = 0.1  # MSE 0.01 -> 20 dB
    assert psnr(output, target, data_range=1.0) == pytest.approx((20 + 10 * math.log10(4)) / 2)
    with np.errstate(all="raise"):
        assert psnr(target, target, data_range=1.0) == math.inf


def test_ssim_identical_is_one() -> None:
    x = np.random.default_rng(0).random((2, 3, 20, 24))
    assert ssim(x, x, data_range=1.0) == pytest.approx(1.0, abs=1e-12)


def test_ssim_agrees_with_skimage() -> None:
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    rng = np.random.default_rng(1)
    x = rng.random((2, 2, 32, 29))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    reference = np.mean([
        structural_similarity(x[n, c], y[n, c], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                              data_range=1.0)
        for n in range(2) for c in range(2)
    ])
    assert ssim(torch.from_numpy(x), torch.from_numpy(y), data_range=1.0) == pytest.approx(reference, abs=1e-4)
    assert ssim(x, y, data_range=1.0) == pytest.approx(reference, abs=1e-10)


def test_ssim_mask_all_ones_equals_unmasked() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.random((2, 1, 16, 16)), rng.random((2, 1, 16, 16))
    assert ssim(x, y, 1.0, mask=np.ones((2, 1, 16, 16))) == pytest.approx(ssim(x, y, 1.0))


def test_dice_hand_case_and_mask() -> None:
    pred = np.array([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 4)
    target = np.array([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 1, 4)
    assert dice(pred, target) == pytest.approx(0.5)  # TP 1, FP 1, FN 1
    # Leaving out the false positive: TP 1, FN 1 -> 2 / 3.
    mask = np.array([1, 0, 1, 1]).reshape(1, 1, 1, 4)
    assert dice(pred, target, mask) == pytest.approx(2 / 3)
    assert dice(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2))) == pytest.approx(1.0)


def test_dice_pools_pixels_across_images() -> None:
    pred = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]).reshape(2, 1, 1, 4)
    target = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]]).reshape(2, 1, 1, 4)
    # Pooled: TP 4, FP 1, FN 1 -> 8 / 10; per image: 1 and 0.
    assert dice(pred, target) == pytest.approx(0.8)
    np.testing.assert_allclose(per_image_dice(pred, target), [1.0, 0.0], atol=1e-8)


def test_pixel_scores_hand_case() -> None:
    prob = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1]).reshape(1, 1, 2, 3)
    target = np.array([1, 1, 1, 0, 0, 0]).reshape(1, 1, 2, 3)
    scores = pixel_scores(prob, target)
    # Called positive: 0.9, 0.8, 0.6 -> TP 2, FN 1, FP 1, TN 2.
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["sensitivity"] == pytest.approx(2 / 3)
    assert scores["specificity"] == pytest.approx(2 / 3)
    assert scores["dice"] == pytest.approx(4 / 6)
    # Pairs (pos, neg) ranked correctly: 0.9 and 0.8 beat all 3 negatives, 0.3 beats 2 -> 8 / 9.
    assert scores["roc_auc"] == pytest.approx(8 / 9)
    masked = pixel_scores(prob, target, mask=np.array([1, 1, 1, 0, 1, 1]).reshape(1, 1, 2, 3))
    assert masked["specificity"] == 1.0 and masked["roc_auc"] == 1.0
    one_class = pixel_scores(prob, np.ones_like(target))
    assert math.isnan(one_class["roc_auc"]) and math.isnan(one_class["specificity"])


def test_paired_report_keys() -> None:
    x = np.random.default_rng(3).random((1, 1, 16, 16)) * 1000
    report = paired_report(x + 10, x, data_range=1000.0, units="HU")
    assert set(report) == {"mae", "psnr", "ssim"}
    assert all(isinstance(v, float) for v in report.values())
    assert report["mae"] == pytest.approx(10.0)
    assert report["psnr"] == pytest.approx(40.0)


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(1, 1, 4, 4\).*\(1, 1, 4, 5\)"):
        mae(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 5)))
    with pytest.raises(ValueError, match=r"\(1, 1, 4, 4\).*\(1, 2, 4, 4\)"):
        dice(np.zeros((1, 1, 4, 4)), np.zeros((1, 2, 4, 4)))
    with pytest.raises(ValueError, match="mask shape"):
        mae(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4)), mask=np.ones((1, 1, 4, 3)))
    with pytest.raises(ValueError, match="0 and 1"):
        mae(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4)), mask=np.full((1, 1, 4, 4), 0.5))
