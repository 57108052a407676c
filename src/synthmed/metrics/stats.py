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
