"""Paired metrics: outputs scored against their own targets (image-to-image translation, segmentation).

Every function takes torch tensors or numpy arrays (N, C, H, W) of floats, output and target of one shape, and
an optional ``mask`` (N, 1, H, W) (or (N, C, H, W)) of 0 / 1 selecting the pixels scored (a body outline, the
field of view of a fundus photograph); a (N, 1, H, W) mask applies to every channel.

Intensity metrics (units are those of the arrays; callers pass Hounsfield units, grey levels, [-1, 1]...):

* :func:`mae`: mean absolute error, pooled over the selected pixels of all images, in the arrays' units.
* :func:`psnr`: ``10 log10(data_range^2 / MSE)`` in dB, computed per image and averaged over images (as most
  translation papers report it); a perfect image gives ``inf``.
* :func:`ssim`: SSIM of Wang et al. 2004 with an 11 x 11 Gaussian window (sigma 1.5) over the valid region (no
  padding), per image and channel, averaged (equal to ``skimage.metrics.structural_similarity`` with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``); unitless, 1 for identical images.

Binary metrics (segmentation as translation: predictions are probabilities, called positive above
``threshold``; targets are positive above 0.5), pooled over the pixels inside the mask of all images, as
DRIVE / STARE vessel segmentation results are reported:

* :func:`dice` (= F1), :func:`per_image_dice`, :func:`pixel_scores` (accuracy, sensitivity, specificity, Dice,
  ROC AUC of the probabilities).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from synthmed.metrics.classification import roc_auc
from synthmed.metrics.diversity import _filter_valid, _gaussian_window

ArrayLike = np.ndarray | torch.Tensor


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim != 4:
        raise ValueError(f"{name} must be (N, C, H, W), got shape {array.shape}")
    return array


def _pair(output: ArrayLike, target: ArrayLike, names: tuple[str, str] = ("output", "target"),
          ) -> tuple[np.ndarray, np.ndarray]:
    a, b = _to_numpy(output, names[0]), _to_numpy(target, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} shapes differ: {a.shape} vs {b.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def _mask(mask: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean mask broadcast to ``shape`` (N, C, H, W); all true when ``mask`` is None."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = _to_numpy(mask, "mask")
    if m.shape not in ((shape[0], 1, *shape[2:]), tuple(shape)):
        raise ValueError(f"mask shape {m.shape} does not match images of shape {tuple(shape)} (expected N, 1, H, W)")
    # Probability maps passed as masks would silently score a thresholded region: insist on 0 / 1.
    if not np.isin(m, (0, 1)).all():
        raise ValueError("mask must contain only 0 and 1")
    return np.broadcast_to(m.astype(bool), shape)


def _check_range(data_range: float) -> None:
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0 (got {data_range})")


def mae(output: ArrayLike, target: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Mean absolute error ``mean |output - target|`` over all selected pixels and channels of all images.

    Args:
        output: (N, C, H, W) translated images.
        target: (N, C, H, W) reference images, in the same units.
        mask: Optional (N, 1, H, W) 0 / 1 mask restricting the pixels averaged.

    Returns:
        The MAE in the arrays' own units (HU for CT, grey levels, ...).
    """
    a, b = _pair(output, target)
    m = _mask(mask, a.shape)
    if not m.any():
        raise ValueError("mask selects no pixels")
    return float(np.abs(a - b)[m].mean())


def psnr(output: ArrayLike, target: ArrayLike, data_range: float, mask: ArrayLike | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB, the mean of per-image values.

    Each image's MSE is taken over its channels and (selected) pixels; the per-image PSNRs are then averaged
    (the usual report in translation papers; it differs from the PSNR of the pooled MSE). Images whose mask
    is empty are left out.

    Args:
        output: (N, C, H, W) translated images.
        target: (N, C, H, W) reference images.
        data_range: Range of the intensities (e.g. 2 for [-1, 1], 255 for 8-bit, the HU window width).
        mask: Optional (N, 1, H, W) 0 / 1 mask restricting the pixels of each image's MSE.

    Returns:
        Mean PSNR in dB; ``inf`` when an image is reproduced exactly (MSE 0).
    """
    _check_range(data_range)
    a, b = _pair(output, target)
    m = _mask(mask, a.shape)
    counts = m.reshape(len(a), -1).sum(axis=1)
    if not counts.any():
        raise ValueError("mask selects no pixels")
    sq_err = np.where(m, (a - b) ** 2, 0.0).reshape(len(a), -1).sum(axis=1)
    mse = sq_err[counts > 0] / counts[counts > 0]
    # MSE 0 gives data_range^2 / 0 = inf and log10(inf) = inf: exact, only the warning is silenced.
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(data_range**2 / mse)
    return float(np.mean(values))


def ssim(
    output: ArrayLike,
    target: ArrayLike,
    data_range: float,
    win_sigma: float = 1.5,
    win_size: int = 11,
    k1: float = 0.01,
    k2: float = 0.03,
    *,
    mask: ArrayLike | None = None,
) -> float:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, valid region only.

    Local means, variances (biased, i.e. ``use_sample_covariance=False``) and covariance use a ``win_size`` x
    ``win_size`` Gaussian window of ``win_sigma`` without padding; the SSIM map is averaged per image and
    channel, then over channels and images. Agrees with ``skimage.metrics.structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range)`` (per channel).

    Args:
        output: (N, C, H, W) translated images, H and W >= ``win_size``.
        target: (N, C, H, W) reference images.
        data_range: Range of the intensities; sets ``C1 = (k1 L)^2`` and ``C2 = (k2 L)^2``.
        win_sigma: Standard deviation of the Gaussian window in pixels.
        win_size: Odd window side in pixels.
        k1: Luminance stabiliser constant.
        k2: Contrast stabiliser constant.
        mask: Optional (N, 1, H, W) 0 / 1 mask; only windows centred on selected pixels are averaged.

    Returns:
        Mean SSIM, unitless, at most 1 (1 for identical images).
    """
    _check_range(data_range)
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be odd and >= 1 (got {win_size})")
    a, b = _pair(output, target)
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"images of shape {a.shape} are smaller than the {win_size} px SSIM window")
    x, y = torch.from_numpy(a), torch.from_numpy(b)
    c = x.shape[1]
    window = _gaussian_window(win_size, win_sigma, x)
    mu_x, mu_y, e_xx, e_yy, e_xy = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), window).split(c, 1)
    var_x, var_y, cov = e_xx - mu_x * mu_x, e_yy - mu_y * mu_y, e_xy - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    ssim_map = ssim_map.numpy()
    if mask is None:
        return float(ssim_map.mean())
    # The valid map's pixel (i, j) is the window centred on image pixel (i + r, j + r).
    r = win_size // 2
    m = _mask(mask, a.shape)[..., r:a.shape[2] - r, r:a.shape[3] - r]
    per_image = [ssim_map[i][m[i]].mean() for i in range(len(a)) if m[i].any()]
    if not per_image:
        raise ValueError("mask selects no window centre inside the valid region")
    return float(np.mean(per_image))


def _binary(prediction: ArrayLike, target: ArrayLike, mask: ArrayLike | None, threshold: float,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, predicted positives, target positives and the mask, each (N, C, H, W)."""
    p, t = _pair(prediction, target, ("prediction", "target"))
    return p, p > threshold, t > 0.5, _mask(mask, p.shape)


def _dice_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, eps: float) -> np.ndarray:
    # eps in both terms: two empty masks agree perfectly (Dice 1) instead of dividing 0 by 0.
    return (2.0 * tp + eps) / (2.0 * tp + fp + fn + eps)


def dice(prediction: ArrayLike, target: ArrayLike, mask: ArrayLike | None = None, threshold: float = 0.5,
         eps: float = 1e-8) -> float:
    """Binary Dice ``2 TP / (2 TP + FP + FN)`` (= F1) with pixels pooled over all images inside the mask.

    Pooling all pixels before the ratio is how DRIVE / STARE vessel segmentation results are reported; see
    :func:`per_image_dice` for the per-image values.

    Args:
        prediction: (N, C, H, W) probabilities (or scores); positive where ``prediction > threshold``.
        target: (N, C, H, W) ground truth; positive where ``target > 0.5``.
        mask: Optional (N, 1, H, W) 0 / 1 mask (e.g. the field of view); pixels outside are ignored.
        threshold: Decision threshold on ``prediction``.
        eps: Added to numerator and denominator: Dice 1 when both prediction and target are empty.

    Returns:
        Dice in [0, 1].
    """
    _, pred, true, m = _binary(prediction, target, mask, threshold)
    tp = np.sum(pred & true & m)
    fp = np.sum(pred & ~true & m)
    fn = np.sum(~pred & true & m)
    return float(_dice_from_counts(np.float64(tp), np.float64(fp), np.float64(fn), eps))


def per_image_dice(prediction: ArrayLike, target: ArrayLike, mask: ArrayLike | None = None,
                   threshold: float = 0.5, eps: float = 1e-8) -> np.ndarray:
    """Binary Dice of each image (channels pooled), as :func:`dice` restricted to one image.

    Args:
        prediction: (N, C, H, W) probabilities; positive where ``prediction > threshold``.
        target: (N, C, H, W) ground truth; positive where ``target > 0.5``.
        mask: Optional (N, 1, H, W) 0 / 1 mask; pixels outside are ignored.
        threshold: Decision threshold on ``prediction``.
        eps: Added to numerator and denominator (an image with both masks empty scores 1).

    Returns:
        float64 array (N,).
    """
    _, pred, true, m = _binary(prediction, target, mask, threshold)
    n = len(pred)

    def count(selected: np.ndarray) -> np.ndarray:
        return (selected & m).reshape(n, -1).sum(axis=1).astype(np.float64)

    return _dice_from_counts(count(pred & true), count(pred & ~true), count(~pred & true), eps)


def pixel_scores(prediction: ArrayLike, target: ArrayLike, mask: ArrayLike | None = None,
                 threshold: float = 0.5) -> dict[str, float]:
    """Pixel classification scores pooled over the pixels inside the mask of all images (DRIVE protocol).

    Args:
        prediction: (N, C, H, W) probabilities; positive where ``prediction > threshold``.
        target: (N, C, H, W) ground truth; positive where ``target > 0.5``.
        mask: Optional (N, 1, H, W) 0 / 1 mask (the field of view); pixels outside are ignored.
        threshold: Decision threshold on ``prediction`` (the AUC uses the probabilities themselves).

    Returns:
        ``accuracy`` (TP + TN) / all, ``sensitivity`` TP / (TP + FN), ``specificity`` TN / (TN + FP), ``dice``
        (= F1) and ``roc_auc`` (rank form with ties averaged, equal to scikit-learn's ``roc_auc_score``);
        a ratio with an empty denominator, and the AUC when one class is absent, are ``nan``.
    """
    prob, pred, true, m = _binary(prediction, target, mask, threshold)
    prob, pred, true = prob[m], pred[m], true[m]
    if prob.size == 0:
        raise ValueError("mask selects no pixels")
    tp = float(np.sum(pred & true))
    tn = float(np.sum(~pred & ~true))
    fp = float(np.sum(pred & ~true))
    fn = float(np.sum(~pred & true))

    def ratio(num: float, den: float) -> float:
        return num / den if den else math.nan

    has_both = 0 < tp + fn < prob.size
    return {
        "accuracy": (tp + tn) / prob.size,
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": roc_auc(prob, true) if has_both else math.nan,
    }


def paired_report(output: ArrayLike, target: ArrayLike, *, data_range: float, units: str = "",
                  mask: ArrayLike | None = None) -> dict[str, float]:
    """MAE, PSNR and SSIM of translated images against their targets.

    Args:
        output: (N, C, H, W) translated images.
        target: (N, C, H, W) reference images.
        data_range: Range of the intensities (for PSNR and SSIM).
        units: Unit of the intensities (e.g. ``"HU"``), for the caller's record: the MAE is in these units but
            the keys stay units-free, so reports of different modalities share keys.
        mask: Optional (N, 1, H, W) 0 / 1 mask applied to all three metrics (SSIM: windows centred inside).

    Returns:
        ``{"mae": ..., "psnr": ..., "ssim": ...}`` as floats (MAE in ``units``, PSNR in dB, SSIM unitless).
    """
    del units  # documentary only: keys must not depend on it
    return {
        "mae": mae(output, target, mask),
        "psnr": psnr(output, target, data_range, mask),
        "ssim": ssim(output, target, data_range, mask=mask),
    }


__all__ = ["dice", "mae", "paired_report", "per_image_dice", "pixel_scores", "psnr", "ssim"]
