"""Uncertainty and reporting for metric values: bootstrap intervals, a value record, sample-size warnings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def bootstrap_interval(
    statistic: Callable[..., float],
    *arrays: np.ndarray | torch.Tensor,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    recentre: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)`` (Efron & Tibshirani 1993).

    ``recentre=True`` shifts the replicates by their mean bias, ``mean(replicates) - statistic(*arrays)``, before
    taking percentiles. Use it for FID: resampling with replacement duplicates rows, which shrinks the covariance
    and inflates every replicate, so the plain percentile interval sits above the point value.

    Every replicate resamples the rows of each array independently with replacement (real and synthetic sets are
    independent samples) and recomputes the statistic; the interval is the (1 - c)/2 and (1 + c)/2 percentiles
    of the replicates. For distances such as FID, duplicated rows shift the replicates (FID is biased by sample
    size): without ``recentre`` the interval then describes the spread but sits above the point value.
    """
    if not arrays:
        raise ValueError("bootstrap_interval needs at least one array")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    arrays = tuple(a if isinstance(a, torch.Tensor) else np.asarray(a) for a in arrays)
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        resampled = []
        for a in arrays:
            idx = rng.integers(0, len(a), size=len(a))
            resampled.append(a[torch.from_numpy(idx)] if isinstance(a, torch.Tensor) else a[idx])
        values[b] = float(statistic(*resampled))
    if recentre:
        values = values - (values.mean() - float(statistic(*arrays)))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


@dataclass
class MetricValue:
    """One reported metric value with its provenance (which feature extractor, how many samples)."""

    name: str
    value: float
    extractor: str | None = None
    n_real: int | None = None
    n_fake: int | None = None
    interval: tuple[float, float] | None = None
    std: float | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (floats, ints, lists, strings, None)."""
        return {
            "name": self.name,
            "value": float(self.value),
            "extractor": self.extractor,
            "n_real": None if self.n_real is None else int(self.n_real),
            "n_fake": None if self.n_fake is None else int(self.n_fake),
            "interval": None if self.interval is None else [float(v) for v in self.interval],
            "std": None if self.std is None else float(self.std),
            "note": self.note,
        }


def sample_size_warning(n: int, dim: int) -> str | None:
    """A one-line warning when n samples are too few to estimate a dim-dimensional covariance (FID), else None.

    The sample covariance of n samples has rank <= n - 1, so for n <= dim it is singular and FID is biased high
    (the bias of FID falls like 1/n anyway, Chong & Forsyth 2020: compare FIDs only at equal n).
    """
    if n < 2:
        return f"only {n} sample(s): a covariance (and FID) needs at least 2"
    if n <= dim:
        return (
            f"{n} samples <= feature dimension {dim}: the covariance is rank-deficient (rank <= {n - 1}) and FID is "
            f"biased high; use more samples or a lower-dimensional feature, and compare FIDs only at equal n"
        )
    return None


# --- comparisons over seeds ----------------------------------------------------------------------------------
PAIRED_METHOD = (
    "Each arm is trained once per seed; a seed fixes the classifier's initial weights, batch order and "
    "augmentation draws and the synthetic samples, so arms are paired by seed. Per arm: the mean over seeds with "
    "a 95% t-interval (mean +- t(0.975, n-1) * sd / sqrt(n)). Against the reference arm: the mean of the "
    "per-seed differences (arm - reference), a 95% paired bootstrap interval (seeds resampled with replacement, "
    "the differences' mean recomputed, 2.5th and 97.5th percentiles of 10000 replicates, seeded) and the "
    "two-sided paired t-test p-value (scipy.stats.ttest_rel). The seeds capture training randomness only: the "
    "test set is fixed, so the intervals do not describe sampling of new patients."
)


def _finite_or_none(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def mean_interval(values: np.ndarray | list[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean of ``values`` (one per seed) with its t-interval, ``mean +- t(1 - alpha/2, n - 1) * sd / sqrt(n)``.

    Args:
        values: One value per seed.
        confidence: Interval coverage.

    Returns:
        ``mean``, ``interval`` ([low, high]; None for fewer than two values), ``std`` (sample, ddof 1), ``n``.
    """
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = float(values.mean())
    if values.size < 2:
        return {"mean": mean, "interval": None, "std": None, "n": 1}
    sd = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, values.size - 1)) * sd / np.sqrt(values.size)
    return {"mean": mean, "interval": [mean - half, mean + half], "std": sd, "n": int(values.size)}


def paired_bootstrap_interval(differences: np.ndarray | list[float], n_boot: int = 10_000,
                              confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of ``differences`` (one per seed), resampling the seeds with replacement.

    Args:
        differences: Per-seed differences, arm - reference.
        n_boot: Bootstrap replicates.
        confidence: Interval coverage.
        seed: Seed of the resampling.
    """
    differences = np.asarray(differences, dtype=np.float64)
    if differences.size == 0:
        raise ValueError("paired_bootstrap_interval needs at least one difference")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, differences.size, size=(n_boot, differences.size))
    replicates = differences[rows].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(replicates, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def paired_comparison(arm: np.ndarray | list[float], reference: np.ndarray | list[float], *, n_boot: int = 10_000,
                      confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """An arm against a reference over the same seeds (``arm[i]`` and ``reference[i]`` share seed ``i``).

    Args:
        arm: One metric value per seed.
        reference: The reference arm's values for the same seeds, in the same order.
        n_boot: Bootstrap replicates of the interval.
        confidence: Interval coverage.
        seed: Seed of the bootstrap.

    Returns:
        ``mean_difference`` (arm - reference), ``interval`` (paired bootstrap percentile interval),
        ``p_value`` (two-sided paired t-test; None when undefined: fewer than two seeds, or all differences
        equal), ``t_statistic``, ``n``.
    """
    from scipy import stats

    arm = np.asarray(arm, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if arm.shape != reference.shape or arm.ndim != 1 or arm.size == 0:
        raise ValueError(f"paired comparison needs equal-length 1-D arrays (got {arm.shape} and {reference.shape})")
    differences = arm - reference
    t_statistic, p_value = np.nan, np.nan
    if differences.size >= 2 and np.ptp(differences) > 0:
        result = stats.ttest_rel(arm, reference)
        t_statistic, p_value = float(result.statistic), float(result.pvalue)
    low, high = paired_bootstrap_interval(differences, n_boot=n_boot, confidence=confidence, seed=seed)
    return {"mean_difference": float(differences.mean()), "interval": [low, high],
            "p_value": _finite_or_none(p_value), "t_statistic": _finite_or_none(t_statistic),
            "n": int(differences.size)}
