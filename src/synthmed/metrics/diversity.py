"""Diversity: multi-scale SSIM (Wang, Simoncelli & Bovik 2003) between images, and within one set.

MS-SSIM(x, y) = l_M(x, y)^w_M * prod_{j=1..M} cs_j(x, y)^w_j, where at scale j (the image average-pooled by 2
j - 1 times) cs_j = mean over the valid-filtered map of (2 s_xy + C2) / (s_x^2 + s_y^2 + C2) and l_M is the
luminance term (2 m_x m_y + C1) / (m_x^2 + m_y^2 + C1) at the coarsest scale (SSIM there = l * cs);
C1 = (0.01 L)^2, C2 = (0.03 L)^2, L the data range. Local means and (biased) variances use a Gaussian window
(sigma 1.5, 11 px) without padding, as the reference implementation, pytorch-msssim and skimage.

Scale rule for small medical images. The standard 5 scales need the coarsest scale (size / 16) to be at least
the 11 px window, i.e. images of 176 px and more. For smaller images:

* use the largest number of scales M <= 5 whose coarsest side ceil(size / 2^(M-1)) is >= 11 px, keeping the
  11 px window, if that gives M >= 3 (images of 41 px and more: 64 px -> 3 scales, 128 px -> 4 scales);
* otherwise (tiny images, < 41 px) keep 3 scales and shrink the window to the largest odd size <= the
  coarsest side, with sigma scaled alike (sigma = 1.5 * window / 11): 28 px -> 3 scales of 28/14/7 px with a
  7 px window; 32 px -> 7 px window; images under 9 px get fewer scales with a window of >= 3 px.

The weights are the first M of (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), renormalised to sum to 1 when M < 5.
``ms_ssim_config(size)`` states the choice. Pooling is 2x2 average pooling, an odd side keeping its last
row / column (like TensorFlow's 'SAME' pooling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WINDOW = 11
_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


@dataclass(frozen=True)
class MsSsimConfig:
    """The effective MS-SSIM set-up for one image size."""

    image_size: int
    scales: int
    window: int
    sigma: float
    weights: tuple[float, ...]
    sizes: tuple[int, ...]  # side of the image at each scale, finest first


def _scale_sizes(image_size: int, scales: int) -> tuple[int, ...]:
    return tuple(math.ceil(image_size / 2**j) for j in range(scales))


def _largest_odd_at_most(n: int) -> int:
    return n if n % 2 else n - 1


def ms_ssim_config(image_size: int, weights: Sequence[float] | None = None) -> MsSsimConfig:
    """Number of scales, window and weights used for square-ish images of side ``image_size`` (see module doc).

    With explicit ``weights`` the number of scales is len(weights) and the weights are used as given; the window
    shrinks (odd, >= 3 px) only if the coarsest scale is smaller than 11 px.
    """
    if image_size < 3:
        raise ValueError(f"images must be at least 3 px for SSIM, got {image_size}")
    if weights is not None:
        scales = len(weights)
        if scales < 1:
            raise ValueError("weights must not be empty")
        coarsest = _scale_sizes(image_size, scales)[-1]
        window = min(_WINDOW, _largest_odd_at_most(coarsest))
        if window < 3:
            raise ValueError(f"{scales} scales need images of at least {3 * 2 ** (scales - 1)} px, got {image_size}")
        used = tuple(float(w) for w in weights)
    else:
        scales = max(m for m in range(1, 6) if _scale_sizes(image_size, m)[-1] >= min(_WINDOW, image_size))
        if _scale_sizes(image_size, scales)[-1] >= _WINDOW and scales >= 3:
            window = _WINDOW
        else:
            # Tiny image: trade window size for scales, 3 scales if the coarsest side keeps a >= 3 px window.
            scales = max(m for m in range(1, 4) if _scale_sizes(image_size, m)[-1] >= 3)
            window = min(_WINDOW, _largest_odd_at_most(_scale_sizes(image_size, scales)[-1]))
        # 5 scales: the published weights as they are (their sum is 0.9999), as the reference implementations.
        total = 1.0 if scales == len(MS_SSIM_WEIGHTS) else sum(MS_SSIM_WEIGHTS[:scales])
        used = tuple(w / total for w in MS_SSIM_WEIGHTS[:scales])
    return MsSsimConfig(
        image_size=image_size,
        scales=scales,
        window=window,
        sigma=_SIGMA * window / _WINDOW,
        weights=used,
        sizes=_scale_sizes(image_size, scales),
    )


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """Normalised 1-D Gaussian of odd length ``size`` (the same taps as scipy.ndimage.gaussian_filter)."""
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(device=like.device, dtype=like.dtype)


def _filter_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of every channel of (N, C, H, W), 'valid' output (no padding)."""
    c = x.shape[1]
    w = window.numel()
    x = F.conv2d(x, window.view(1, 1, w, 1).expand(c, 1, w, 1), groups=c)
    return F.conv2d(x, window.view(1, 1, 1, w).expand(c, 1, 1, w), groups=c)


def _ssim_and_cs(
    x: torch.Tensor, y: torch.Tensor, window: torch.Tensor, data_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean SSIM and mean contrast-structure term, each (N, C)."""
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    c = x.shape[1]
    # One grouped convolution filters all five moment maps at once.
    moments = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.split(c, dim=1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    cs_map = (2.0 * cov + c2) / (var_x + var_y + c2)
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return (luminance * cs_map).flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.ndim != 4 or a.shape != b.shape:
        raise ValueError(f"expected two (N, C, H, W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return a.to(dtype), b.to(dtype)


def ssim(
    a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, window: int = _WINDOW, sigma: float = _SIGMA
) -> torch.Tensor:
    """Single-scale SSIM (Wang et al. 2004) per image, (N,), averaged over channels and valid positions.

    Equals skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=data_range) for each image.
    """
    a, b = _check_pair(a, b)
    return _ssim_and_cs(a, b, _gaussian_window(window, sigma, a), data_range)[0].mean(1)


def ms_ssim(
    a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, weights: Sequence[float] | None = None
) -> torch.Tensor:
    """Multi-scale SSIM per image pair, (N,), for (N, C, H, W) images (in [-1, 1] by default: data_range 2).

    Scales, window and weights follow ``ms_ssim_config(min(H, W), weights)``. Negative contrast-structure and
    SSIM terms are clamped to 0 before the fractional powers (as pytorch-msssim), so the result is in [0, 1]
    instead of NaN. Channels are combined by averaging their MS-SSIM.
    """
    a, b = _check_pair(a, b)
    config = ms_ssim_config(min(a.shape[-2:]), weights)
    window = _gaussian_window(config.window, config.sigma, a)
    terms = []
    for scale in range(config.scales):
        ssim_val, cs = _ssim_and_cs(a, b, window, data_range)
        if scale < config.scales - 1:
            terms.append(torch.relu(cs))
            # ceil_mode pools a trailing odd row/column on its own (TensorFlow 'SAME' behaviour).
            a = F.avg_pool2d(a, 2, ceil_mode=True)
            b = F.avg_pool2d(b, 2, ceil_mode=True)
        else:
            terms.append(torch.relu(ssim_val))
    w = torch.tensor(config.weights, dtype=a.dtype, device=a.device).view(-1, 1, 1)
    return torch.stack(terms).pow(w).prod(0).mean(1)


def _pair_indices(n: int, pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``pairs`` distinct unordered pairs i < j of n items (all of them if there are not more)."""
    total = n * (n - 1) // 2
    if pairs >= total:
        i, j = np.triu_indices(n, k=1)
        return i, j
    k = np.sort(rng.choice(total, size=pairs, replace=False))
    # Invert the row-major enumeration of the strict upper triangle: row i starts at i*n - i*(i+1)/2.
    i = (n - 2 - np.floor(np.sqrt(-8.0 * k + 4.0 * n * (n - 1) - 7.0) / 2.0 - 0.5)).astype(np.int64)
    j = (k + i + 1 - total + (n - i) * ((n - i) - 1) // 2).astype(np.int64)
    return i, j


def ms_ssim_diversity(
    images: torch.Tensor,
    pairs: int = 1000,
    seed: int = 0,
    data_range: float = 2.0,
    batch_size: int = 500,
) -> dict[str, float | int]:
    """Mean and std (ddof=0) of MS-SSIM over random distinct pairs of images within one set.

    Higher means less diverse (1 = all identical). Compare a synthetic set's value with the real set's value:
    mode collapse shows as a much higher synthetic value (Odena et al. 2017 used this for class-conditional GANs).
    """
    images = torch.as_tensor(images)
    n = images.shape[0]
    if n < 2:
        raise ValueError("ms_ssim_diversity needs at least 2 images")
    i, j = _pair_indices(n, pairs, np.random.default_rng(seed))
    values = []
    with torch.no_grad():
        for start in range(0, len(i), batch_size):
            ii = torch.from_numpy(i[start : start + batch_size])
            jj = torch.from_numpy(j[start : start + batch_size])
            values.append(ms_ssim(images[ii], images[jj], data_range=data_range))
    v = torch.cat(values).double()
    config = ms_ssim_config(min(images.shape[-2:]))
    return {
        "mean": float(v.mean()),
        "std": float(v.std(unbiased=False)),
        "pairs": int(v.numel()),
        "n_images": int(n),
        "scales": config.scales,
        "window": config.window,
    }
