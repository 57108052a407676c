"""Loss curves from a run's ``losses.csv``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from synthmed.io import atomic_write


def read_losses(path: Path) -> dict[str, np.ndarray]:
    """Columns of ``losses.csv`` as float arrays (blank cells -> NaN); ``phase`` is dropped."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    columns = [c for c in rows[0] if c != "phase"]
    return {c: np.array([float(r[c]) if r[c] not in ("", None) else np.nan for r in rows]) for c in columns}


def _smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential smoothing; gaps between logged values are bridged (losses logged every few steps draw a line),
    but nothing is drawn after a loss's last value (a loss of an earlier phase stops where its phase stopped)."""
    out = np.empty_like(values)
    last = np.nan
    for i, v in enumerate(values):
        if np.isnan(v):
            out[i] = last
            continue
        last = v if np.isnan(last) else weight * last + (1 - weight) * v
        out[i] = last
    logged = np.flatnonzero(~np.isnan(values))
    if logged.size:
        out[logged[-1] + 1:] = np.nan
    return out


def plot_losses(losses_csv: Path, out_png: Path, title: str = "") -> Path | None:
    """Each loss raw (faint) and smoothed against the step; returns None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read_losses(losses_csv)
    if not data or len(data["step"]) == 0:
        return None
    steps = data.pop("step")
    names = [n for n in data if not np.all(np.isnan(data[n]))]
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 2.2 * len(names) + 0.6), sharex=True, squeeze=False)
    weight = 0.9 if len(steps) > 50 else 0.0
    for ax, name in zip(axes[:, 0], names, strict=True):
        ax.plot(steps, data[name], alpha=0.25, lw=0.8, color="C0")
        ax.plot(steps, _smooth(data[name], weight), lw=1.5, color="C0")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    atomic_write(Path(out_png), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return Path(out_png)
