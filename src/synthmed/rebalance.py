"""Write an augmented data set: a run's real training split plus synthetic samples of chosen classes.

``synthmed augment RUN --to balanced --out DIR`` tops every class up to the largest one with samples of a
class-conditional run; ``--per-class 0=400,1=0`` asks for exact synthetic counts. The result is either a folder
with one sub-folder per class (``0_malignant/real_00000.png``, ``0_malignant/synthetic_00000.png``; the index
prefix keeps the label order when the folder is read back) or one npz with ``images``, ``labels``, ``synthetic``
(bool per image), ``class_names`` and ``source_run``. ``manifest.json`` names every synthetic file (or npz row)
with the run, checkpoint and seed that made it.

Only the **training** split is copied: validation and test images never enter an augmented set, and a run whose
generator saw them (trained on split ``all``, ``val`` or ``test``) is refused, since its samples would carry
them into training.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.errors import ConfigError, SynthmedError
from synthmed.io import write_folder_atomically

FORMATS = ("folder", "npz")


@dataclass(frozen=True)
class AugmentResult:
    """Where the augmented set went and what it holds (real and synthetic counts per class, in label order)."""

    out: Path
    class_names: tuple[str, ...]
    real_counts: tuple[int, ...]
    synthetic_counts: tuple[int, ...]


def parse_per_class(text: str, class_index: Any) -> dict[int, int]:
    """``"0=400,1=0"`` or ``"malignant=400"`` -> {class index: synthetic count}; classes by index or name."""
    counts: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.rpartition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--per-class: expected CLASS=COUNT items separated by commas (got {item!r})")
        try:
            count = int(value)
        except ValueError:
            raise ConfigError(f"--per-class: count of {key.strip()!r} must be a whole number (got {value!r})") from None
        if count < 0:
            raise ConfigError(f"--per-class: count of {key.strip()!r} must not be negative (got {count})")
        index = class_index(key.strip())
        if index in counts:
            raise ConfigError(f"--per-class names class {key.strip()!r} twice")
        counts[index] = count
    if not counts:
        raise ConfigError("--per-class: give at least one CLASS=COUNT")
    return counts


def synthetic_counts(real_counts: Sequence[int], to: str | None, per_class: dict[int, int] | None) -> list[int]:
    """Synthetic images per class: up to the largest class (``to="balanced"``) or as given per class."""
    if (to is None) == (per_class is None):
        raise ConfigError("give exactly one of --to balanced or --per-class CLASS=COUNT,...")
    if to is not None:
        if to != "balanced":
            raise ConfigError(f"--to must be 'balanced' (got {to!r}); use --per-class for exact counts")
        largest = max(real_counts)
        return [largest - count for count in real_counts]
    return [int(per_class.get(k, 0)) for k in range(len(real_counts))]  # type: ignore[union-attr]


def folder_name(index: int, name: str, num_classes: int) -> str:
    """``0_malignant``: the index prefix (zero-padded) keeps sorted folder order equal to label order."""
    safe = re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_") or "class"
    return f"{index:0{len(str(num_classes - 1))}d}_{safe}"


def _check_run_data(model: Any) -> None:
    split = model.config.data.split
    if split != "train":
        raise ConfigError(f"{model.run_dir}: the generator was trained on split {split!r}, which holds validation "
                          "or test images; an augmented training set must not carry them (train on split 'train')")


def _load_training_split(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    from synthmed.data import load_training_set

    options = {**model.config.data.loader_options(), "split": "train"}
    data = load_training_set(model.config.data.source, **options)
    labels = getattr(data, "labels", None)
    if labels is None:
        raise ConfigError(f"{model.config.data.source or 'breastmnist'}: the run's training data has no labels")
    return data.images, labels.long()


def augment(run: str | Path, out: str | Path, *, to: str | None = None, per_class: str | dict[int, int] | None = None,
            fmt: str = "folder", seed: int = 0, checkpoint: str | Path | None = None) -> AugmentResult:
    """Write the real training split of ``run``'s data plus synthetic samples into the new or empty folder ``out``.

    Args:
        run: A class-conditional run (directory or name under ``runs/``).
        out: New or empty output folder; written in a staging folder and renamed, so nothing is half-written.
        to: ``"balanced"``: every class topped up to the largest class's count.
        per_class: Synthetic images per class, ``"0=400,1=0"`` (index or class name) or {index: count}.
        fmt: ``folder`` (one PNG sub-folder per class) or ``npz`` (one file).
        seed: Seed of the synthetic samples (all drawn in one call, classes in label order).
        checkpoint: ``"best"`` or a checkpoint JSON [default: the latest].
    """
    from synthmed import api

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be folder or npz (got {fmt!r})")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SynthmedError(f"{out}: output folder exists and is not empty")
    model = api.load(run, checkpoint=checkpoint)
    if not model.conditional:
        raise ConfigError(f"{model.run_dir}: recipe {model.config.recipe!r} is not class-conditional, so it cannot "
                          "add images of a chosen class; train conditional, acgan, cwgan-gp, bagan or bagan-gp")
    if isinstance(per_class, str):
        per_class = parse_per_class(per_class, model.class_index)
    _check_run_data(model)
    names = model.class_names
    counts = synthetic_counts([0] * len(names), to, per_class)  # argument check before loading any data
    real_images, real_labels = _load_training_split(model)
    real_counts = [int((real_labels == k).sum()) for k in range(len(names))]
    counts = synthetic_counts(real_counts, to, per_class)
    labels = torch.cat([torch.full((n,), k, dtype=torch.long) for k, n in enumerate(counts)])
    fake = model.sample(int(labels.numel()), seed=seed, labels=labels) if labels.numel() else real_images[:0]
    provenance = {
        "run": str(model.run_dir), "recipe": model.config.recipe, "checkpoint_step": model.step,
        "checkpoint": str(checkpoint) if checkpoint is not None else "latest", "seed": seed,
        "sampling": "one call of TrainedModel.sample(n, seed, labels) with labels in class order",
    }
    writer = _write_npz if fmt == "npz" else _write_folder
    write_folder_atomically(
        out, lambda staging: writer(staging, names, real_images, real_labels, fake, labels, provenance))
    return AugmentResult(out, tuple(names), tuple(real_counts), tuple(counts))


def _manifest(staging: Path, names: Sequence[str], real_labels: torch.Tensor, fake_labels: torch.Tensor,
              files: list[dict[str, Any]], provenance: dict[str, Any], fmt: str) -> None:
    manifest = {
        "format": fmt,
        "class_names": list(names),
        "real_per_class": {n: int((real_labels == k).sum()) for k, n in enumerate(names)},
        "synthetic_per_class": {n: int((fake_labels == k).sum()) for k, n in enumerate(names)},
        "real_split": "train (validation and test images are never copied)",
        "source": provenance,
        "synthetic": files,
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _write_folder(staging: Path, names: Sequence[str], real: torch.Tensor, real_labels: torch.Tensor,
                  fake: torch.Tensor, fake_labels: torch.Tensor, provenance: dict[str, Any]) -> None:
    from synthmed.viz.grid import array_to_image, to_uint8

    folders = [folder_name(k, name, len(names)) for k, name in enumerate(names)]
    for folder in folders:
        (staging / folder).mkdir()
    files: list[dict[str, Any]] = []
    for prefix, images, labels in (("real", real, real_labels), ("synthetic", fake, fake_labels)):
        pixels = to_uint8(images)
        counters = [0] * len(names)
        for i, (img, label) in enumerate(zip(pixels, labels.tolist(), strict=True)):
            relative = f"{folders[label]}/{prefix}_{counters[label]:05d}.png"
            counters[label] += 1
            array_to_image(img).save(staging / relative)
            if prefix == "synthetic":
                files.append({"file": relative, "class": names[label], "label": label, "sample_index": i})
    _manifest(staging, names, real_labels, fake_labels, files, provenance, "folder")


def _write_npz(staging: Path, names: Sequence[str], real: torch.Tensor, real_labels: torch.Tensor,
               fake: torch.Tensor, fake_labels: torch.Tensor, provenance: dict[str, Any]) -> None:
    from synthmed.viz.grid import to_uint8

    pixels = np.concatenate([to_uint8(real), to_uint8(fake)]) if len(fake) else to_uint8(real)
    pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    labels = torch.cat([real_labels, fake_labels]).numpy().astype(np.int64)
    synthetic = np.concatenate([np.zeros(len(real_labels), bool), np.ones(len(fake_labels), bool)])
    np.savez_compressed(staging / "augmented.npz", images=pixels, labels=labels, synthetic=synthetic,
                        class_names=np.array(names), source_run=np.array(provenance["run"]))
    files = [{"file": "augmented.npz", "row": len(real_labels) + i, "class": names[label], "label": label,
              "sample_index": i} for i, label in enumerate(fake_labels.tolist())]
    _manifest(staging, names, real_labels, fake_labels, files, provenance, "npz")
