"""Fidelity metrics on feature arrays: FID, KID, Inception Score and precision / recall / density / coverage.

Every function takes features (numpy float64 (N, D) or torch tensors), so the feature extractor (Inception,
a medical encoder, a random network) is the caller's choice and should be reported with the value.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import scipy.linalg
import torch

from synthmed.metrics.memorisation import (
    ArrayLike,
    as_float64_tensor,
    kth_neighbour_sq_distance,
    sq_distance_chunks,
)
from synthmed.metrics.stats import sample_size_warning

FrechetMethod = Literal["auto", "sqrtm", "eigh"]
FidMethod = Literal["auto", "sqrtm", "eigh", "gram"]

# From this dimension on the symmetric eigen route is faster than scipy's Schur-based sqrtm (measured on 2 cores:
# 2x at D = 64 and 256, 4.6x at D = 2048: 1.8 s vs 8.4 s); below it both take well under a millisecond.
_EIGH_MIN_DIM = 64


def _as_numpy(x: ArrayLike, name: str = "features") -> np.ndarray:
    return as_float64_tensor(x, name).numpy()


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) with ddof=1 of features (N, D), as pytorch-fid and torch-fidelity."""
    f = _as_numpy(features)
    if f.shape[0] < 2:
        raise ValueError("feature_statistics needs at least 2 samples")
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """Tr sqrt(S1 S2) with scipy.linalg.sqrtm, retrying with eps*I added when it fails (as pytorch-fid)."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # Singular product (e.g. n < D): regularise both covariances slightly and retry.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError("matrix square root of sigma1 @ sigma2 is not finite even with eps*I; use method='eigh'")
    if np.iscomplexobj(covmean):
        max_imag = float(np.abs(covmean.imag).max())
        scale = max(1.0, float(np.abs(covmean.real).max()))
        if max_imag > 1e-3 * scale:
            raise ValueError(
                f"matrix square root of sigma1 @ sigma2 has a significant imaginary part (max |imag| = "
                f"{max_imag:.3g}, scale {scale:.3g}); covariances are probably rank-deficient (too few samples); "
                "use more samples or method='eigh'"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via eigh (negative round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr sqrt(S1 S2) = sum_i sqrt(lambda_i(sqrt(S1) S2 sqrt(S1))) for symmetric PSD S1, S2.

    S1 S2 is similar to the symmetric PSD matrix sqrt(S1) S2 sqrt(S1) (same eigenvalues), so two symmetric
    eigen-decompositions replace the general Schur-based sqrtm: faster, and real by construction.
    """
    root = _psd_sqrt(sigma1)
    m = root @ sigma2 @ root
    eigenvalues = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
    method: FrechetMethod = "auto",
) -> float:
    """Frechet distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982; FID of Heusel et al. 2017).

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)).

    ``method="sqrtm"``: scipy.linalg.sqrtm of S1 S2 as pytorch-fid (eps*I added to both covariances if the result
    is not finite; ValueError if the imaginary part is significant, max |imag| > 1e-3 * max(1, max |real|)).
    ``method="eigh"``: eigenvalues of sqrt(S1) S2 sqrt(S1), which needs S1, S2 symmetric PSD (covariances are).
    ``"auto"``: eigh for D >= 64 (faster there), sqrtm below. Both agree to round-off on well-conditioned input.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"shape mismatch: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {sigma1.shape}, sigma2 {sigma2.shape}"
        )
    if method == "auto":
        method = "eigh" if mu1.size >= _EIGH_MIN_DIM else "sqrtm"
    if method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    elif method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    else:
        raise ValueError(f"method must be 'auto', 'sqrtm' or 'eigh', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def _frechet_distance_gram(real: np.ndarray, fake: np.ndarray) -> float:
    """The Frechet distance from the features themselves, exactly, in O(n m D) instead of O(D^3).

    With centred features X (n, D) and Y (m, D), S1 = X'X / (n-1) and S2 = Y'Y / (m-1). The non-zero eigenvalues
    of S1 S2 are those of (X Y')(Y X') / ((n-1)(m-1)), so Tr sqrt(S1 S2) is the sum of the singular values of the
    n x m matrix X Y' over sqrt((n-1)(m-1)); Tr S1 = ||X||^2 / (n-1). For small medical sets in Inception's 2,048
    dimensions (n, m of a few hundred) this replaces two 2,048 x 2,048 eigen-decompositions by one small SVD.
    """
    x, y = real - real.mean(axis=0), fake - fake.mean(axis=0)
    n, m = len(x), len(y)
    singular_values = np.linalg.svd(x @ y.T, compute_uv=False)
    tr_covmean = float(singular_values.sum()) / np.sqrt((n - 1) * (m - 1))
    diff = real.mean(axis=0) - fake.mean(axis=0)
    return float(diff @ diff + (x * x).sum() / (n - 1) + (y * y).sum() / (m - 1) - 2.0 * tr_covmean)


def fid(real_features: ArrayLike, fake_features: ArrayLike, method: FidMethod = "auto") -> float:
    """Frechet distance between Gaussians fitted to real and fake features (Heusel et al. 2017).

    ``method``: ``"gram"`` works on the features (exact; see :func:`_frechet_distance_gram`), the others on
    their covariances (:func:`frechet_distance`). ``"auto"`` takes ``"gram"`` when both sets have fewer samples
    than dimensions (it is then the cheaper route), else :func:`frechet_distance`'s own choice.
    Warns when either set has no more samples than feature dimensions (rank-deficient covariance, FID biased high).
    """
    real, fake = _as_numpy(real_features, "real_features"), _as_numpy(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features have dimension {real.shape[1]} but fake features have {fake.shape[1]}")
    for n in (real.shape[0], fake.shape[0]):
        message = sample_size_warning(n, real.shape[1])
        if message:
            warnings.warn(message, stacklevel=2)
    if min(len(real), len(fake)) < 2:
        raise ValueError("fid needs at least 2 samples in each set")
    if method not in ("auto", "sqrtm", "eigh", "gram"):
        raise ValueError(f"method must be 'auto', 'sqrtm', 'eigh' or 'gram', got {method!r}")
    if method == "gram" or (method == "auto" and max(len(real), len(fake)) < real.shape[1]):
        return _frechet_distance_gram(real, fake)
    mu1, sigma1 = feature_statistics(real)
    mu2, sigma2 = feature_statistics(fake)
    return frechet_distance(mu1, sigma1, mu2, sigma2, method=method)


def _poly_kernel(x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef0: float) -> torch.Tensor:
    return (x @ y.T * gamma + coef0).pow_(degree)


def _mmd2_unbiased(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3): off-diagonal means of K_xx and K_yy minus twice mean K_xy."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    sum_xx = k_xx.sum() - k_xx.diagonal().sum()
    sum_yy = k_yy.sum() - k_yy.diagonal().sum()
    return float(sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * k_xy.sum() / (m * n))


def kid(
    real: ArrayLike,
    fake: ArrayLike,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): (mean, std) of unbiased MMD^2 over random subsets.

    Kernel k(x, y) = (gamma x.y + coef0)^degree with gamma = 1/D by default. Each subset draws ``subset_size``
    real and fake rows without replacement (as torch-fidelity and torchmetrics); std is the population std over
    subsets (ddof=0, as both). ``subset_size`` is clipped to min(n_real, n_fake) with a warning.
    """
    x_all = as_float64_tensor(real, "real")
    y_all = as_float64_tensor(fake, "fake")
    if x_all.shape[1] != y_all.shape[1]:
        raise ValueError(f"real features have dimension {x_all.shape[1]} but fake features have {y_all.shape[1]}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    size = min(subset_size, x_all.shape[0], y_all.shape[0])
    if size < subset_size:
        warnings.warn(
            f"KID subset_size {subset_size} > number of samples; using {size} (min of n_real, n_fake)", stacklevel=2
        )
    if size < 2:
        raise ValueError("KID needs at least 2 real and 2 fake samples")
    gamma = 1.0 / x_all.shape[1] if gamma is None else gamma
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for s in range(subsets):
        x = x_all[torch.from_numpy(rng.choice(x_all.shape[0], size, replace=False))]
        y = y_all[torch.from_numpy(rng.choice(y_all.shape[0], size, replace=False))]
        values[s] = _mmd2_unbiased(
            _poly_kernel(x, x, degree, gamma, coef0),
            _poly_kernel(y, y, degree, gamma, coef0),
            _poly_kernel(x, y, degree, gamma, coef0),
        )
    return float(values.mean()), float(values.std())


def inception_score(probs_or_logits: ArrayLike, splits: int = 10, from_logits: bool = False) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), (mean, std) over ``splits``.

    The N predictions are cut into ``splits`` contiguous parts (no shuffling, as the original code); p(y) is the
    mean prediction of each part; std is over parts with ddof=0 (as the original and torch-fidelity).
    """
    p = as_float64_tensor(probs_or_logits, "probs_or_logits")
    if from_logits:
        p = torch.softmax(p, dim=1)
    elif (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(p.shape[0], dtype=p.dtype), atol=1e-3):
        raise ValueError("rows must be probabilities (non-negative, summing to 1); pass from_logits=True for logits")
    n = p.shape[0]
    splits = max(1, min(splits, n))
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        p_y = part.mean(0, keepdim=True)
        # xlogy: 0 log 0 = 0, so one-hot predictions are fine.
        kl = (torch.xlogy(part, part) - torch.xlogy(part, p_y)).sum(1)
        scores.append(float(kl.mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


def prdc(real: ArrayLike, fake: ArrayLike, k: int = 5, chunk: int = 2048) -> dict[str, float]:
    """Precision and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020).

    Exactly as clovaai/generative-evaluation-prdc: the radius of a sample is the Euclidean distance to its k-th
    nearest neighbour in its own set (self excluded), and with strict inequalities

    * precision = share of fakes inside some real ball, recall = share of reals inside some fake ball,
    * density = (1/k) * mean over fakes of the number of real balls containing it,
    * coverage = share of reals whose nearest fake lies inside the real's ball.

    Distances are computed in chunks of ``chunk`` rows (never the full n x n matrix) and compared squared.

    Ties: a sample's k-th neighbour lies exactly on the edge of its ball, so wherever fakes coincide with reals
    (identical sets, copied samples) the strict inequalities decide exact ties. The radii (real-vs-real products)
    and the comparisons (fake-vs-real products) are different float64 computations of the same distances (GEMM
    and the norm additions are not bitwise symmetric) and disagree by ~1e-15 relative, so such ties would fall
    either way at random (density 1.05 instead of 1 for identical sets). A point therefore counts as inside a
    ball only when its squared distance is below the squared radius by more than a bound on the rounding error
    of both: ``||a||^2 + ||b||^2 - 2 a.b`` over D terms is off by at most ~(D + 2) eps (||a||^2 + ||b||^2). Exact
    ties then resolve as the strict inequality says (outside); only distances equal to within rounding error
    (~1e-12 relative for D = 2048) are affected. The features are first centred on the real mean (distances are
    translation invariant) to keep the norms, and so the bound, small.
    """
    x = as_float64_tensor(real, "real")
    y = as_float64_tensor(fake, "fake")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real features have dimension {x.shape[1]} but fake features have {y.shape[1]}")
    if not 1 <= k < min(x.shape[0], y.shape[0]):
        raise ValueError(f"k={k} must be >= 1 and smaller than both set sizes ({x.shape[0]}, {y.shape[0]})")
    centre = x.mean(0, keepdim=True)
    x, y = x - centre, y - centre
    real_r2 = kth_neighbour_sq_distance(x, k, chunk)
    fake_r2 = kth_neighbour_sq_distance(y, k, chunk)
    x_sq, y_sq = x.square().sum(1), y.square().sum(1)
    # err(d2(a, b)) <= gamma (|a|^2 + |b|^2); a comparison of d2(x_i, y_j) with a radius d2(x_i, x_m) (or
    # d2(y_j, y_m)) is off by at most gamma (2 |x_i|^2 + |y_j|^2 + |x_m|^2) <= 2 gamma (|x_i|^2 + |y_j|^2 + max).
    gamma = (x.shape[1] + 2) * torch.finfo(torch.float64).eps
    largest = float(torch.cat([x_sq, y_sq]).max())
    in_real_balls = torch.empty(y.shape[0], dtype=torch.long)  # per fake: number of real balls containing it
    recalled = torch.zeros(x.shape[0], dtype=torch.bool)  # per real: inside some fake ball
    covered = torch.zeros(x.shape[0], dtype=torch.bool)  # per real: some (so the nearest) fake inside its ball
    for start, d2 in sq_distance_chunks(y, x, chunk):  # d2: (fake chunk, n_real)
        stop = start + d2.shape[0]
        d2 += 2 * gamma * (y_sq[start:stop].unsqueeze(1) + x_sq.unsqueeze(0) + largest)  # d2 + tolerance
        inside_real = d2 < real_r2.unsqueeze(0)  # (fake j, real i): fake j inside real ball i
        in_real_balls[start:stop] = inside_real.sum(1)
        covered |= inside_real.any(0)
        recalled |= (d2 < fake_r2[start:stop].unsqueeze(1)).any(0)
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(in_real_balls.double().mean() / k),
        "coverage": float(covered.double().mean()),
    }
