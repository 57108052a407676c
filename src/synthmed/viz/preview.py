"""Draw what a recipe's preview shows (:class:`~synthmed.recipes.base.Preview`) as ``samples/step_*.png``."""

from __future__ import annotations

from pathlib import Path

import torch

from synthmed.recipes.base import Preview


def save_preview(path: Path, preview: Preview | torch.Tensor, title: str = "") -> Path:
    """A sample grid, side-by-side columns (input | output | target per row) or a code-frequency plot."""
    from synthmed.viz.grid import save_grid

    if isinstance(preview, torch.Tensor):
        preview = Preview(grid=preview)
    if preview.grid is not None:
        return save_grid(path, preview.grid, nrow=preview.nrow, scale=_scale(preview.grid))
    if preview.columns:
        return _save_columns(path, preview.columns)
    if preview.frequencies:
        return _save_frequencies(path, preview.frequencies, preview.names, title)
    raise ValueError("an empty Preview: give grid, columns or frequencies")


def _scale(images: torch.Tensor) -> int:
    """Small images are enlarged (nearest) so a 28 px grid is readable; at most 4x."""
    return min(4, max(1, 256 // max(int(images.shape[-1]), 1)))


def _save_columns(path: Path, columns: dict[str, torch.Tensor]) -> Path:
    """One row per sample, one column per named batch (channels broadcast to the widest)."""
    from synthmed.viz.grid import save_grid

    batches = list(columns.values())
    channels = max(int(b.shape[1]) for b in batches)
    size = max(int(b.shape[-1]) for b in batches)
    same = []
    for b in batches:
        b = b.detach().float().cpu()
        if b.shape[1] != channels:
            b = b[:, :1].expand(-1, channels, -1, -1)
        if b.shape[-1] != size:
            b = torch.nn.functional.interpolate(b, size=(size, size), mode="nearest")
        same.append(b)
    interleaved = torch.stack(same, dim=1).flatten(0, 1)  # row i: sample i of each column
    return save_grid(path, interleaved, nrow=len(batches), scale=_scale(interleaved))


def _save_frequencies(path: Path, frequencies: dict[str, torch.Tensor], names: tuple[str, ...], title: str) -> Path:
    """medGAN's picture: each code's frequency in the synthetic records against the real ones (diagonal = equal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synthmed.io import atomic_write

    (real_name, real), *others = list(frequencies.items())
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    top = float(max(v.max() for v in frequencies.values())) or 1.0
    ax.plot([0, top], [0, top], color="0.6", lw=1, ls="--")
    for name, values in others:
        ax.scatter(real.cpu().numpy(), values.cpu().numpy(), s=8, alpha=0.7, label=name)
    ax.set_xlabel(f"{real_name} frequency per code ({len(real)} codes)")
    ax.set_ylabel("frequency per code")
    ax.set_title(title or "code frequencies", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
