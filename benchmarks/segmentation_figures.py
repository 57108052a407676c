"""Figures for docs/segment.md: the same test cases segmented by unet / segan / pix2pix-seg (seed 0), drawn with
``synthmed.segment.overlay`` (yellow right, green missed, magenta extra).

    python benchmarks/segmentation_figures.py EVAL_DIR DATA_DIR OUT_DIR

``EVAL_DIR`` holds the study's ``synthmed segment`` outputs (``lgg-unet-s0``, ...; see docs/segment.md),
``DATA_DIR`` the data folder (``lgg-mri/``, ``ph2/``, ``drive/``). Writes ``lgg_overlays.jpg`` (the largest
tumour slice of 6 test patients), ``ph2_overlays.jpg`` (6 test lesions) and ``drive_overlays.jpg`` (200 px crops
of 3 test images at full resolution).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from synthmed.data import load_training_set
from synthmed.segment import _split_names, overlay

EVAL, S, OUT = (Path(a) for a in sys.argv[1:4]) if len(sys.argv) == 4 else (None, None, None)
METHODS = ("unet", "segan", "pix2pix-seg")


def _mask(path: Path) -> np.ndarray:
    return (np.asarray(Image.open(path)) > 127).astype(np.int64)


def split_figure(data: str, source: str, options: dict, n: int, title: str) -> None:
    held = load_training_set(source, split="test", **options)
    names = _split_names(list(held.meta), len(held), "test")
    images, truth = held.tensors["image"], held.tensors["target"][:, 0].long().numpy()
    patients = [str(p) for p in held.patients] if held.patients is not None else names
    # One case per patient where possible: the slice with the largest lesion of each of n patients.
    chosen, seen = [], set()
    for i in np.argsort(-truth.reshape(len(truth), -1).sum(1)):
        if patients[i] not in seen and truth[i].sum() > 0:
            chosen.append(i)
            seen.add(patients[i])
        if len(chosen) == n:
            break
    chosen.sort(key=lambda i: patients[i])
    fig, axes = plt.subplots(len(METHODS), n, figsize=(1.9 * n, 2.0 * len(METHODS)), squeeze=False)
    for r, method in enumerate(METHODS):
        for c, i in enumerate(chosen):
            labels = _mask(EVAL / f"{data}-{method}-s0" / f"{names[i]}.png")
            axes[r][c].imshow(overlay(images[i], labels, truth[i]))
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if c == 0:
                axes[r][c].set_ylabel(method)
            if r == 0:
                axes[r][c].set_title(patients[i][-13:] if data == "lgg" else names[i], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT / f"{data}_overlays.jpg", dpi=90)
    plt.close(fig)


def drive_figure() -> None:
    stems = ["01_test", "08_test", "19_test"]
    crop = (slice(180, 380), slice(40, 240))
    fig, axes = plt.subplots(len(METHODS), len(stems), figsize=(2.6 * len(stems), 2.7 * len(METHODS)), squeeze=False)
    for c, stem in enumerate(stems):
        image = np.asarray(Image.open(f"{S}/drive/testing/images/{stem}.tif").convert("RGB"))
        truth = (np.asarray(Image.open(f"{S}/drive/testing/1st_manual/{stem[:2]}_manual1.gif")) > 127).astype(np.int64)
        tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
        for r, method in enumerate(METHODS):
            labels = _mask(EVAL / f"drive-{method}-s0" / f"{stem}.png")
            picture = overlay(tensor[:, crop[0], crop[1]], labels[crop], truth[crop])
            axes[r][c].imshow(picture)
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if c == 0:
                axes[r][c].set_ylabel(method)
            if r == 0:
                axes[r][c].set_title(f"{stem} (200 px crop)", fontsize=8)
    fig.suptitle("DRIVE test images, seed 0: yellow right, green missed, magenta extra", fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT / "drive_overlays.jpg", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    if OUT is None:
        raise SystemExit(__doc__)
    OUT.mkdir(parents=True, exist_ok=True)
    split_figure("lgg", f"{S}/lgg-mri/lgg_mri_128.npz", {"pair": "image:mask", "normalize": "patient"}, 6,
                 "LGG test patients (largest tumour slice of 6 of the 10), seed 0: yellow right, green missed, "
                 "magenta extra")
    split_figure("ph2", f"{S}/ph2/images", {"pair": "image:mask", "size": 128}, 6,
                 "PH2 test lesions (6 of 32), seed 0: yellow right, green missed, magenta extra")
    drive_figure()
