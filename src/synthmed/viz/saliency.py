"""Where a classifier looks: Grad-CAM (Selvaraju et al. 2017) and occlusion sensitivity (Zeiler & Fergus 2014).

Both return one map per image, (N, H, W) at the input's resolution, non-negative and scaled to a maximum of 1
per image (all zeros when the class score does not depend on the image at all), and leave the model in eval
mode with its parameters' gradients untouched.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthmed.io import atomic_write


def _targets(target_class: int | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """(n,) class indices from one class or from n of them."""
    targets = torch.as_tensor(target_class, dtype=torch.long, device=device).reshape(-1)
    if targets.numel() == 1:
        return targets.expand(n)
    if targets.numel() != n:
        raise ValueError(f"{targets.numel()} target classes for {n} images")
    return targets


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map to a maximum of 1 (maps that are all zero stay zero)."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return maps / peak


def grad_cam(model: nn.Module, images: torch.Tensor, target_class: int | torch.Tensor,
             layer: nn.Module) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) in [0, 1]: ReLU of the layer's activations weighted by the spatial mean of the
    target logit's gradient with respect to them, upsampled bilinearly to the image size.

    Args:
        model: A classifier returning logits (N, K).
        images: (N, C, H, W) on the model's device.
        target_class: One class for all images or (N,) classes.
        layer: The module whose output is explained (the last convolutional block: ``model.cam_layer``).
    """
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        captured["activation"] = output

    model.eval()
    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            # An input that needs gradients keeps the graph even when the model's parameters are frozen.
            logits = model(images.detach().clone().requires_grad_(True))
            targets = _targets(target_class, images.shape[0], logits.device)
            score = logits.gather(1, targets.view(-1, 1)).sum()
            activation = captured["activation"]
            (gradient,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _normalise(cam.clamp_min(0)).cpu()


@torch.no_grad()
def occlusion(model: nn.Module, images: torch.Tensor, target_class: int | torch.Tensor, patch: int,
              stride: int, fill: float | None = None) -> torch.Tensor:
    """Occlusion maps (N, H, W) in [0, 1]: how much the target class's probability drops when a ``patch`` x
    ``patch`` square is replaced by ``fill``, averaged over every square covering a pixel (drops below zero,
    i.e. a square that raises the probability, count as zero).

    Args:
        model: A classifier returning logits (N, K).
        images: (N, C, H, W) on the model's device.
        target_class: One class for all images or (N,) classes.
        patch: Side of the occluding square in pixels.
        stride: Step between squares in pixels.
        fill: Value written into the square; default each image's mean (a neutral grey for that image).
    """
    model.eval()
    n, _, height, width = images.shape
    targets = _targets(target_class, n, images.device)
    # Every pixel is covered: the last square sits flush with the far edge even when the stride skips it.
    rows = sorted(set(range(0, max(height - patch, 0) + 1, stride)) | {max(height - patch, 0)})
    cols = sorted(set(range(0, max(width - patch, 0) + 1, stride)) | {max(width - patch, 0)})
    base = F.softmax(model(images).float(), dim=1).gather(1, targets.view(-1, 1))[:, 0]
    drop = torch.zeros(n, height, width, device=images.device)
    cover = torch.zeros(height, width, device=images.device)
    for i in range(n):
        value = images[i].mean() if fill is None else torch.tensor(fill, device=images.device)
        batch = images[i].expand(len(rows) * len(cols), *images.shape[1:]).clone()
        for j, (top, left) in enumerate((r, c) for r in rows for c in cols):
            batch[j, :, top:top + patch, left:left + patch] = value
        occluded = F.softmax(model(batch).float(), dim=1)[:, targets[i]]
        for j, (top, left) in enumerate((r, c) for r in rows for c in cols):
            drop[i, top:top + patch, left:left + patch] += base[i] - occluded[j]
            if i == 0:
                cover[top:top + patch, left:left + patch] += 1
    maps = (drop / cover.clamp_min(1)).clamp_min(0)
    return _normalise(maps).cpu()


def save_saliency_figure(path: Path, images: torch.Tensor, panels: Sequence[tuple[str, torch.Tensor]],
                         row_titles: Sequence[str], title: str = "") -> Path:
    """A grid: one row per image, the image then each panel's map over it, written atomically as PNG.

    Args:
        path: Output PNG.
        images: (N, C, H, W) in [-1, 1] (the first channel is shown in grey).
        panels: (column title, (N, H, W) maps in [0, 1]) for each column after the image.
        row_titles: One label per image (e.g. its class and the models' probabilities).
        title: Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grey = ((images[:, 0].detach().cpu().numpy() + 1.0) / 2.0).clip(0, 1)
    n, columns = grey.shape[0], 1 + len(panels)
    fig, axes = plt.subplots(n, columns, figsize=(1.9 * columns, 1.9 * n + 0.8), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(grey[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(row_titles[i], fontsize=7)
        for j, (_name, maps) in enumerate(panels, start=1):
            axes[i, j].imshow(grey[i], cmap="gray", vmin=0, vmax=1)
            axes[i, j].imshow(np.asarray(maps[i]), cmap="jet", alpha=0.45, vmin=0, vmax=1)
    for j, name in enumerate(["image", *(name for name, _ in panels)]):
        axes[0, j].set_title(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(textwrap.fill(title, width=int(22 * columns)), fontsize=7)
    # Fixed margins: tight_layout over dozens of axes costs seconds and the grid is regular anyway.
    top = 1.0 - 0.75 / (1.9 * n + 0.8)
    fig.subplots_adjust(left=0.12, right=0.99, bottom=0.01, top=top - 0.02, wspace=0.05, hspace=0.12)
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return Path(path)
