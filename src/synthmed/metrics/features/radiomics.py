"""Weight-free radiomics texture features, in the spirit of the Frechet Radiomic Distance (Konz, Osuala et al.).

Per channel, on intensities ``v = (x + 1) / 2`` in [0, 1] (images are clipped to [-1, 1] first):

* first order (9): mean, standard deviation, skewness, kurtosis (not excess; 0 for flat images, as pyradiomics),
  entropy of a 32-bin histogram over [0, 1] (bits), 10th/50th/90th percentiles (linear interpolation, as numpy),
  energy as the mean of squares (size-independent, unlike pyradiomics' sum);
* GLCM (6): on ``levels`` (16) grey levels of fixed width over [0, 1] (fixed bins, not per-image min/max, so
  intensity differences between images count), distance 1 at 0/45/90/135 degrees, symmetric and normalised;
  contrast, dissimilarity, homogeneity (1 / (1 + (i - j)^2)), joint energy (ASM), correlation (1 for flat
  matrices) and joint entropy (bits); each computed per angle, then averaged. Definitions as
  ``skimage.feature.graycoprops`` (entropy there is in nats) and pyradiomics;
* Laplacian of Gaussian (6): sigma 1, 2, 4 px, scale-normalised (sigma^2 * LoG, as pyradiomics), replicate
  borders (scipy's ``mode="nearest"``); mean absolute response and standard deviation;
* Haar wavelet (8): two levels of the orthonormal 2-D Haar transform; mean of squares of LL, LH, HL, HH per
  level (LH: differences between rows, i.e. horizontal edges; HL: between columns; level 2 decomposes LL1).

Everything is vectorised over the batch: co-occurrences are one ``bincount`` over all images and angles.

The raw features have very different scales (GLCM contrast reaches ~100, percentiles stay in [0, 1]), and a
Frechet distance on them is dominated by the largest. As FRD does, we z-score each feature with the mean and
standard deviation of the real reference set: call :meth:`RadiomicsExtractor.fit_standardizer` on the real
features once; from then on :meth:`~RadiomicsExtractor.extract` returns standardised features (``raw=True``
for raw ones) and :meth:`~RadiomicsExtractor.describe` records the statistics. Features with no spread in the
reference set are only centred.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from synthmed.errors import ConfigError, DataError
from synthmed.metrics.features.base import FeatureExtractor, resolve_device

FIRST_ORDER = ("mean", "std", "skewness", "kurtosis", "entropy", "p10", "p50", "p90", "energy")
GLCM = ("contrast", "dissimilarity", "homogeneity", "joint_energy", "correlation", "joint_entropy")
GLCM_OFFSETS = ((0, 1), (1, 1), (1, 0), (1, -1))  # (row, col) steps for 0, 45, 90, 135 degrees (skimage's)
WAVELET_BANDS = ("LL", "LH", "HL", "HH")


def first_order(v: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """(M, P) intensities in [0, 1] -> (M, 9) first-order statistics (float64)."""
    if v.device.type == "cpu":  # numpy's sort is ~20x faster than torch's on CPU (measured, torch 2.13)
        ordered = torch.from_numpy(np.sort(v.numpy(), axis=1)).double()
    else:
        ordered = v.sort(dim=1).values.double()
    v = v.double()
    n = v.shape[1]
    mean = v.mean(1)
    centred = v - mean[:, None]
    c2 = centred * centred
    m2 = c2.mean(1)
    m3 = (c2 * centred).mean(1)
    m4 = (c2 * c2).mean(1)
    flat = m2 <= 1e-12  # flat images: skewness and kurtosis are defined as 0 (pyradiomics)
    safe = torch.where(flat, torch.ones_like(m2), m2)
    skew = torch.where(flat, torch.zeros_like(m2), m3 / safe.pow(1.5))
    kurt = torch.where(flat, torch.zeros_like(m2), m4 / safe.pow(2))
    index = (v * bins).floor().clamp(0, bins - 1).long()
    rows = torch.arange(v.shape[0], device=v.device)[:, None] * bins
    hist = torch.bincount((rows + index).reshape(-1), minlength=v.shape[0] * bins).view(-1, bins).double() / n
    entropy = -(hist * torch.log2(hist.clamp_min(1e-300))).sum(1)
    percentiles = []
    for q in (0.1, 0.5, 0.9):  # numpy's default "linear" method
        pos = q * (n - 1)
        lo, frac = int(math.floor(pos)), pos - math.floor(pos)
        hi = min(lo + 1, n - 1)
        percentiles.append(ordered[:, lo] + (ordered[:, hi] - ordered[:, lo]) * frac)
    energy = v.pow(2).mean(1)
    return torch.stack([mean, m2.sqrt(), skew, kurt, entropy, *percentiles, energy], dim=1)


def cooccurrence(q: torch.Tensor, levels: int) -> torch.Tensor:
    """(M, H, W) integer levels -> (M, 4, L, L) symmetric, normalised GLCMs at distance 1 (float64)."""
    m, h, w = q.shape
    mats = []
    image_offset = torch.arange(m, device=q.device)[:, None, None] * (levels * levels)
    for dr, dc in GLCM_OFFSETS:
        r0, r1 = max(0, -dr), h - max(0, dr)
        c0, c1 = max(0, -dc), w - max(0, dc)
        a = q[:, r0:r1, c0:c1]
        b = q[:, r0 + dr : r1 + dr, c0 + dc : c1 + dc]
        index = (image_offset + a * levels + b).reshape(-1)
        counts = torch.bincount(index, minlength=m * levels * levels).view(m, levels, levels).double()
        mats.append(counts + counts.transpose(1, 2))
    glcm = torch.stack(mats, dim=1)
    return glcm / glcm.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)


def glcm_features(p: torch.Tensor) -> torch.Tensor:
    """(M, A, L, L) normalised GLCMs -> (M, 6) features, each averaged over the A angles."""
    levels = p.shape[-1]
    i = torch.arange(levels, dtype=p.dtype, device=p.device)[:, None]
    j = i.T
    diff2 = (i - j) ** 2
    contrast = (p * diff2).sum((2, 3))
    dissimilarity = (p * (i - j).abs()).sum((2, 3))
    homogeneity = (p / (1.0 + diff2)).sum((2, 3))
    asm = (p * p).sum((2, 3))
    mu_i = (p * i).sum((2, 3))
    mu_j = (p * j).sum((2, 3))
    di = i - mu_i[..., None, None]
    dj = j - mu_j[..., None, None]
    sd_i = (p * di**2).sum((2, 3)).sqrt()
    sd_j = (p * dj**2).sum((2, 3)).sqrt()
    cov = (p * di * dj).sum((2, 3))
    flat = (sd_i < 1e-15) | (sd_j < 1e-15)  # skimage: correlation of a flat matrix is 1
    corr = torch.where(flat, torch.ones_like(cov), cov / (sd_i * sd_j).clamp_min(1e-300))
    entropy = -(p * torch.log2(p.clamp_min(1e-300))).sum((2, 3))
    return torch.stack([contrast, dissimilarity, homogeneity, asm, corr, entropy], dim=2).mean(1)


def _gaussian_kernels(sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """scipy.ndimage's 1-D Gaussian and its second derivative (truncate 4 sigma)."""
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * x**2 / sigma**2)
    g = g / g.sum()
    return g, g * (x**2 / sigma**4 - 1.0 / sigma**2)


def filter_matrix(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """(n, n) matrix ``A`` with ``A @ signal`` = 1-D correlation with ``kernel`` under replicate borders.

    Filtering as a matrix product: one batched GEMM per axis instead of a 1-channel convolution, which oneDNN
    runs ~20x slower on CPU; the borders are folded into the matrix, so nothing is padded.
    """
    r = (len(kernel) - 1) // 2
    taps = (torch.arange(n)[:, None] + torch.arange(-r, r + 1)[None, :]).clamp(0, n - 1)  # (n_out, k) inputs
    matrix = torch.zeros(n, n, dtype=kernel.dtype)
    return matrix.scatter_add_(1, taps, kernel.expand(n, -1).contiguous())


def laplacian_of_gaussian(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(M, H, W) -> scale-normalised LoG ``sigma^2 * (d2/dx2 + d2/dy2)(G * image)`` with replicate borders
    (scipy's ``gaussian_laplace(..., mode="nearest") * sigma**2``)."""
    h, w = images.shape[-2:]
    g, g2 = _gaussian_kernels(sigma)
    rows_g, rows_g2 = (filter_matrix(k, h).to(images.device, images.dtype) for k in (g, g2))
    cols_g, cols_g2 = (filter_matrix(k, w).to(images.device, images.dtype).T for k in (g, g2))
    return (rows_g @ images @ cols_g2 + rows_g2 @ images @ cols_g) * sigma**2


def haar_energies(images: torch.Tensor, levels: int) -> torch.Tensor:
    """(M, H, W) -> (M, 4 * levels) mean squares of the orthonormal Haar sub-bands LL, LH, HL, HH per level."""
    out = []
    x = images
    for _ in range(levels):
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        if h == 0 or w == 0:
            raise DataError(None, f"images are too small for a {levels}-level wavelet decomposition")
        x = x[:, :h, :w]
        a, b = x[:, 0::2, 0::2], x[:, 0::2, 1::2]
        c, d = x[:, 1::2, 0::2], x[:, 1::2, 1::2]
        ll = (a + b + c + d) / 2
        lh = (a + b - c - d) / 2
        hl = (a - b + c - d) / 2
        hh = (a - b - c + d) / 2
        out += [band.pow(2).mean((1, 2)) for band in (ll, lh, hl, hh)]
        x = ll
    return torch.stack(out, dim=1)


class RadiomicsExtractor(FeatureExtractor):
    """Hand-crafted texture features per channel (29 each with the defaults); no weights, no download."""

    name = "radiomics"

    def __init__(
        self,
        channels: int = 1,
        levels: int = 16,
        histogram_bins: int = 32,
        log_sigmas: tuple[float, ...] = (1.0, 2.0, 4.0),
        wavelet_levels: int = 2,
        device: str | torch.device | None = None,
        standardizer: dict[str, Any] | None = None,
    ) -> None:
        if channels < 1 or levels < 2 or histogram_bins < 2 or wavelet_levels < 0:
            raise ConfigError("radiomics needs channels >= 1, levels >= 2, histogram_bins >= 2, wavelet_levels >= 0")
        self.channels = int(channels)
        self.levels = int(levels)
        self.histogram_bins = int(histogram_bins)
        self.log_sigmas = tuple(float(s) for s in log_sigmas)
        self.wavelet_levels = int(wavelet_levels)
        self.device = resolve_device(device)
        self.feature_names = [f"c{c}.{n}" for c in range(self.channels) for n in self._channel_feature_names()]
        self.dim = len(self.feature_names)
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        self._n_reference = 0
        if standardizer is not None:
            self._mean = np.asarray(standardizer["mean"], dtype=np.float64)
            self._std = np.asarray(standardizer["std"], dtype=np.float64)
            self._n_reference = int(standardizer.get("n", 0))
            if self._mean.shape != (self.dim,) or self._std.shape != (self.dim,):
                raise ConfigError(f"radiomics standardizer has the wrong length (expected {self.dim} features)")

    def _channel_feature_names(self) -> list[str]:
        names = [f"firstorder.{n}" for n in FIRST_ORDER] + [f"glcm.{n}" for n in GLCM]
        for s in self.log_sigmas:
            names += [f"log{s:g}.mean_abs", f"log{s:g}.std"]
        for level in range(1, self.wavelet_levels + 1):
            names += [f"haar{level}.{band}_energy" for band in WAVELET_BANDS]
        return names

    @property
    def standardized(self) -> bool:
        return self._mean is not None

    def describe(self) -> dict[str, Any]:
        standardizer: dict[str, Any] | None = None
        if self._mean is not None and self._std is not None:
            standardizer = {"n": self._n_reference, "mean": self._mean.tolist(), "std": self._std.tolist()}
        return {
            "name": self.name,
            "dim": self.dim,
            "network": None,
            "weights": None,
            "features": {
                "per_channel": self._channel_feature_names(),
                "channels": self.channels,
                "intensity": "v = (clip(x, -1, 1) + 1) / 2 in [0, 1]",
                "first_order_histogram_bins": self.histogram_bins,
                "glcm": {"levels": self.levels, "binning": "fixed width over [0, 1]", "distance": 1,
                         "angles_deg": [0, 45, 90, 135], "symmetric": True, "aggregation": "mean over angles"},
                "log_sigmas_px": list(self.log_sigmas),
                "log": "sigma^2-normalised, replicate borders",
                "wavelet": f"orthonormal Haar, {self.wavelet_levels} levels, sub-band mean squares",
            },
            "input": {"size": "native (no resizing)", "channels": self.channels},
            "standardization": (
                "z-score with the real reference set's statistics" if standardizer else "none (raw features)"
            ),
            "standardizer": standardizer,
        }

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        n, c, h, w = batch.shape
        if c != self.channels:
            raise ConfigError(
                f"radiomics extractor was built for {self.channels} channel(s) but the images have {c}; "
                f"use get_extractor('radiomics', channels={c})"
            )
        if h < 2 or w < 2:
            raise DataError(None, f"images of {h}x{w} px are too small for texture features")
        v = ((batch.clamp(-1.0, 1.0) + 1.0) / 2.0).reshape(n * c, h, w)
        parts = [first_order(v.reshape(n * c, h * w), self.histogram_bins)]
        q = (v * self.levels).floor().clamp(0, self.levels - 1).long()
        parts.append(glcm_features(cooccurrence(q, self.levels)))
        for sigma in self.log_sigmas:
            response = laplacian_of_gaussian(v, sigma).reshape(n * c, -1).double()
            parts.append(torch.stack([response.abs().mean(1), response.std(1, unbiased=False)], dim=1))
        if self.wavelet_levels:
            parts.append(haar_energies(v.double(), self.wavelet_levels))
        return torch.cat(parts, dim=1).reshape(n, -1)  # (N*C, F) -> (N, C*F), channel-major like feature_names

    def extract(
        self,
        images: torch.Tensor | np.ndarray,
        batch_size: int | None = None,
        progress: bool = False,
        raw: bool = False,
    ) -> np.ndarray:
        """(N, dim) features; z-scored with the reference statistics once :meth:`fit_standardizer` was called,
        unless ``raw``."""
        features = super().extract(images, batch_size, progress)
        return features if raw else self.standardize(features)

    def standardize(self, features: np.ndarray) -> np.ndarray:
        """Apply the reference z-scoring to raw features (unchanged when no standardizer is fitted)."""
        if self._mean is None or self._std is None:
            return features
        return (np.asarray(features, dtype=np.float64) - self._mean) / self._std

    def fit_standardizer(self, real_features: np.ndarray) -> np.ndarray:
        """Learn per-feature mean and standard deviation from RAW features of the real reference set; returns
        those features standardised. Later :meth:`extract` calls return standardised features."""
        real = np.asarray(real_features, dtype=np.float64)
        if real.ndim != 2 or real.shape[1] != self.dim or real.shape[0] < 2:
            raise ConfigError(f"fit_standardizer needs raw features shaped (N >= 2, {self.dim}); got {real.shape}")
        std = real.std(axis=0)
        self._mean = real.mean(axis=0)
        self._std = np.where(std > 1e-12 * (1.0 + np.abs(self._mean)), std, 1.0)  # constant features: centre only
        self._n_reference = int(real.shape[0])
        return self.standardize(real)

