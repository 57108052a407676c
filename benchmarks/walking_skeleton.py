"""Walking-skeleton acceptance runs: the default `synthmed train` and brain MRI at 64 px on CPU.

    python benchmarks/walking_skeleton.py default     # BreastMNIST defaults: training <= 2 minutes, command <= 5
    python benchmarks/walking_skeleton.py lgg         # LGG FLAIR 64 px, 25-minute budget (<= 30 minutes wall)

Each writes benchmarks/results/<name>.json (command, wall time, steps, throughput, machine) and pictures in
docs/images/ (the final sample grid beside a grid of real training images, and a latent walk).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "images"

RUNS = {
    "default": {"args": [], "limit_minutes": 5.0, "training_limit_minutes": 2.0, "data": None},
    "lgg": {
        "args": ["--data", str(SHARED / "lgg-mri" / "lgg_mri_128.npz"), "--channels", "flair", "--size", "64",
                 "--max-minutes", "25", "--sample-every", "500", "--checkpoint-every", "1000"],
        "limit_minutes": 30.0,
        "data": SHARED / "lgg-mri" / "lgg_mri_128.npz",
    },
}


def machine() -> dict[str, object]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def real_grid(data: str | None, channels: str | None, size: int | None, out: Path, n: int = 64) -> None:
    from synthmed.data import load_dataset
    from synthmed.viz.grid import save_grid

    dataset = load_dataset(data, channels=channels, size=size, split="train")
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    images = dataset.images[pick]
    save_grid(out, images, scale=max(1, min(4, 256 // images.shape[-1])))


def training_limit(spec: dict[str, object], training: dict[str, object]) -> dict[str, object]:
    """The training part of the default run must fit its budget (issue 16: two minutes on 2 cores)."""
    if "training_limit_minutes" not in spec:
        return {}
    limit = float(spec["training_limit_minutes"]) * 60  # type: ignore[arg-type]
    seconds = float(training["last_session"]["wall_seconds"])  # type: ignore[index]
    return {"training_limit_seconds": limit, "training_within_limit": seconds <= limit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted(RUNS))
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "benchmarks")
    args = parser.parse_args()
    spec = RUNS[args.which]
    if spec["data"] is not None and not Path(spec["data"]).exists():
        sys.exit(f"skipped: {spec['data']} is absent")
    run_dir = args.workdir / f"walking-skeleton-{args.which}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    command = ["synthmed", "train", "--out", str(run_dir), *spec["args"]]
    print("running:", " ".join(command), flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True)
    wall = time.monotonic() - started
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = sorted((run_dir / "samples").glob("step_*.png"))[-1]
    IMAGES.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    prefix = "breastmnist_default" if args.which == "default" else "lgg_flair64"
    shutil.copy(last, IMAGES / f"{prefix}.png")
    shutil.copy(run_dir / "curves.png", IMAGES / f"{prefix}_curves.png")
    opts = dict(zip(spec["args"][::2], spec["args"][1::2], strict=False))
    real_grid(opts.get("--data"), opts.get("--channels"), int(opts["--size"]) if "--size" in opts else None,
              IMAGES / f"{prefix}_real.png")
    subprocess.run(["synthmed", "explore", str(run_dir), "--out", str(IMAGES / f"{prefix}_walks.png")], check=True)
    result = {
        "benchmark": f"walking_skeleton/{args.which}",
        "command": " ".join(["synthmed", "train", *spec["args"]]).replace(str(ROOT.parent), ".."),
        "wall_seconds_including_startup": round(wall, 1),
        "limit_seconds": spec["limit_minutes"] * 60,
        "within_limit": wall <= spec["limit_minutes"] * 60,
        **training_limit(spec, metrics["training"]),
        "training": metrics["training"],
        "machine": machine(),
        "pictures": [f"docs/images/{prefix}{s}.png" for s in ("", "_real", "_curves", "_walks")],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (RESULTS / f"walking_skeleton_{args.which}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
