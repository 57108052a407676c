"""Per-class sample grids of class-conditional runs: for each class, a row of real training images and a row of
synthetic ones, titled with the run, recipe, checkpoint step, sample seed and counts.

    python benchmarks/class_grids.py RUN [RUN ...] --out docs/images/rebalance --per-row 10 --seed 0

Writes ``OUT/<run name>.png`` and ``OUT/class_grids.json`` (what each picture shows). Real images are the first
``per-row`` training images of each class in the run's own data split (the GAN's training split).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import synthmed  # noqa: E402
from synthmed.data import load_training_set  # noqa: E402
from synthmed.viz.grid import make_grid  # noqa: E402


def _strip(images: torch.Tensor) -> np.ndarray:
    tiles = make_grid(images, nrow=len(images))
    return tiles[..., 0] if tiles.shape[-1] == 1 else tiles


def class_grid(run: Path, out: Path, per_row: int, seed: int) -> dict:
    model = synthmed.load(run)
    data = load_training_set(model.config.data.source, **{**model.config.data.loader_options(), "split": "train"})
    names = model.class_names
    fig, axes = plt.subplots(2 * len(names), 1, figsize=(per_row * 0.9, 2.0 * len(names) + 0.6), dpi=110)
    for k, name in enumerate(names):
        real = data.images[data.labels == k][:per_row]
        fake = model.sample(per_row, seed=seed, labels=k)
        for row, (kind, images) in enumerate((("real", real), ("synthetic", fake))):
            ax = axes[2 * k + row]
            strip = _strip(images)
            ax.imshow(strip, cmap="gray" if strip.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_axis_off()
            ax.set_title(f"{kind}: class {k} '{name}' ({len(images)} images)", fontsize=8, loc="left")
    title = (f"{run.name}: recipe {model.config.recipe}, step {model.step}, synthetic seed {seed}; "
             f"real = first training images of each class")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{run.name}.png"
    fig.savefig(path)
    plt.close(fig)
    return {"run": str(run), "recipe": model.config.recipe, "step": model.step, "seed": seed,
            "per_row": per_row, "classes": list(names), "picture": str(path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/images/rebalance"))
    parser.add_argument("--per-row", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records = [class_grid(run, args.out, args.per_row, args.seed) for run in args.runs]
    index = args.out / "class_grids.json"
    previous = json.loads(index.read_text()) if index.is_file() else []
    kept = [r for r in previous if r["run"] not in {rec["run"] for rec in records}]
    index.write_text(json.dumps(kept + records, indent=2) + "\n")
    for record in records:
        print(f"wrote {record['picture']}")


if __name__ == "__main__":
    main()
