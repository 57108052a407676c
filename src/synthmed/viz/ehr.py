"""Pictures of synthetic patient records' evaluation (:mod:`synthmed.metrics.ehr`): medGAN's dimension-wise
probability and prediction scatter plots (Choi et al. 2017, sec. 4) and code-by-code correlation heat maps.

Each title states the method and the sample counts; each file is written atomically (temp file, then rename).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.io import atomic_write

#: Codes drawn in a correlation heat map when none are chosen (more are unreadable at this size).
MAX_HEATMAP_CODES = 30


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "undefined" if value is None else format(value, spec)


def diagonal_scatter(ax: Any, x: np.ndarray, y: np.ndarray, top: float) -> None:
    """Points, the diagonal (equal values) and square axes from 0 to ``top``.

    Args:
        ax: a matplotlib axes.
        x: real values (one per code).
        y: synthetic values.
        top: upper end of both axes.
    """
    ax.plot([0, top], [0, top], color="0.6", lw=1, ls="--", label="equal")
    ax.scatter(x, y, s=10, alpha=0.7, color="C0")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)


def _pair(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, names: str
          ) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"{names} must be two equal 1-D arrays (got {a.shape} and {b.shape})")
    return a, b


def _scatter_figure(path: str | Path, x: np.ndarray, y: np.ndarray, top: float, labels: tuple[str, str],
                    legend: str, title: str) -> Path:
    """One real-against-synthetic scatter with its diagonal, axis labels, a legend line and a title."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 5.0))
    diagonal_scatter(ax, x, y, top)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.legend([ax.lines[0]], [legend], fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=9)
    return _save(fig, Path(path))


def save_probability_scatter(path: str | Path, real_prev: Sequence[float] | np.ndarray,
                             synth_prev: Sequence[float] | np.ndarray, *, r: float | None, rmse: float,
                             n_real: int, n_synthetic: int, title: str = "") -> Path:
    """medGAN's dimension-wise probability plot: each code's prevalence, real (x) against synthetic (y).

    Args:
        path: PNG file to write.
        real_prev: (D,) per-code prevalence in the real records.
        synth_prev: (D,) the same in the synthetic records.
        r: Pearson r of the two (None when undefined).
        rmse: Root mean squared difference of the two.
        n_real: Real records behind ``real_prev``.
        n_synthetic: Synthetic records behind ``synth_prev``.
        title: First title line; the method and counts follow.
    """
    x, y = _pair(real_prev, synth_prev, "real_prev and synth_prev")
    top = float(max(x.max(initial=0.0), y.max(initial=0.0))) or 1.0
    method = f"dimension-wise probability (presence): {x.size} codes,\n{n_real} real vs {n_synthetic} synthetic records"
    return _scatter_figure(path, x, y, top * 1.02, (f"real prevalence ({n_real} records)",
                                                   f"synthetic prevalence ({n_synthetic} records)"),
                           f"equal; r = {_fmt(r)}, RMSE = {_fmt(rmse, '.4f')}",
                           "\n".join(t for t in (title, method) if t))


def save_prediction_scatter(path: str | Path, f1_real: Sequence[float] | np.ndarray,
                            f1_synth: Sequence[float] | np.ndarray, *, mean_gap: float | None, n_codes: int,
                            n_train: int, n_test: int, title: str = "") -> Path:
    """medGAN's dimension-wise prediction plot: each code's test F1 trained on real (x) against on synthetic (y).

    Args:
        path: PNG file to write.
        f1_real: (K,) per-code F1 of the models trained on real records.
        f1_synth: (K,) the same for the models trained on synthetic records.
        mean_gap: Mean absolute F1 difference (None when undefined).
        n_codes: Codes predicted (K).
        n_train: Training rows of each model.
        n_test: Real test records.
        title: First title line; the method and counts follow.
    """
    x, y = _pair(f1_real, f1_synth, "f1_real and f1_synth")
    method = (f"dimension-wise prediction (logistic regression): {n_codes} codes,\n{n_train} training rows each, "
              f"{n_test} real test records")
    return _scatter_figure(path, x, y, 1.0, ("F1, trained on real records", "F1, trained on synthetic records"),
                           f"equal; mean |F1 gap| = {_fmt(mean_gap)}", "\n".join(t for t in (title, method) if t))


def save_cooccurrence_difference(path: str | Path, real_corr: np.ndarray, synth_corr: np.ndarray, *, n_real: int,
                                 n_synthetic: int, codes: Sequence[int] | None = None,
                                 names: Sequence[str] | None = None, mean_abs_difference: float | None = None,
                                 title: str = "") -> Path:
    """Code-by-code correlation heat maps: real | synthetic | absolute difference, for a few codes.

    Args:
        path: PNG file to write.
        real_corr: (D, D) correlations of the real records (:func:`synthmed.metrics.ehr.code_correlation`).
        synth_corr: (D, D) the same for the synthetic records.
        n_real: Real records behind ``real_corr``.
        n_synthetic: Synthetic records behind ``synth_corr``.
        codes: Column indices to draw, e.g. the most prevalent ``np.argsort(-prevalence)[:30]``; default the first
            :data:`MAX_HEATMAP_CODES`.
        names: The D code names (tick labels); default the indices.
        mean_abs_difference: Mean absolute difference over all code pairs (the metric), shown in the title.
        title: First title line; the method and counts follow.
    """
    real, synth = np.asarray(real_corr, dtype=float), np.asarray(synth_corr, dtype=float)
    if real.shape != synth.shape or real.ndim != 2 or real.shape[0] != real.shape[1]:
        raise ValueError(f"real_corr and synth_corr must be two equal square matrices (got {real.shape} and "
                         f"{synth.shape})")
    shown = np.arange(min(MAX_HEATMAP_CODES, real.shape[0])) if codes is None else np.asarray(codes, dtype=int)
    labels = [str(names[c]) if names is not None else str(c) for c in shown]
    grid = np.ix_(shown, shown)
    panels = (("real", real[grid], "RdBu_r", -1.0), ("synthetic", synth[grid], "RdBu_r", -1.0),
              ("|real - synthetic|", np.abs(real[grid] - synth[grid]), "magma", 0.0))
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.6))
    for ax, (name, matrix, cmap, low) in zip(axes, panels, strict=True):
        image = ax.imshow(matrix, cmap=cmap, vmin=low, vmax=1.0 if low < 0 else max(float(matrix.max()), 1e-6))
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    method = (f"code-by-code Pearson correlation of presence: {shown.size} of {real.shape[0]} codes, {n_real} real "
              f"vs {n_synthetic} synthetic records; mean |difference| over all pairs = {_fmt(mean_abs_difference)}")
    fig.suptitle("\n".join(t for t in (title, method) if t), fontsize=9)
    return _save(fig, Path(path))
