"""Sampling throughput through ``synthmed.load()`` (what ``synthmed sample`` runs): DCGAN 64 px, default widths.

    python benchmarks/load_sampling_speed.py                  # about 1 minute on 2 cores

Trains a 1-step run on 256 random 64 px images (speed does not depend on the weights), loads it, then times
``model.sample(n=2048, seed=0)`` best of 3 after a warm-up, with torch's default threads: once as ``load()``
returns the model, once with its networks moved back to NCHW (the same-run reference: these shared machines
vary +-30% between runs). Prints images/s; writes nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import synthmed


def best_rate(model: synthmed.api.TrainedModel, n: int, repeats: int) -> float:
    model.sample(256, seed=0)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.sample(n, seed=0)
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "noise64.npz"
        np.savez(data, images=np.random.default_rng(0).integers(0, 256, (256, 64, 64), dtype=np.uint8))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = synthmed.train(data, out=Path(tmp) / "run", steps=1, progress=False).run_dir
        model = synthmed.load(run)
        weight = next(p for p in model.recipe.networks["G"].parameters() if p.dim() == 4 and p.shape[-1] > 1)
        layout = "NCHW" if weight.is_contiguous() else "channels_last"
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, n={args.n}, best of {args.repeats}")
        print(f"load() as returned ({layout}): {best_rate(model, args.n, args.repeats):7.1f} images/s")
        model.recipe.networks.to(memory_format=torch.contiguous_format)
        print(f"same model moved to NCHW:      {best_rate(model, args.n, args.repeats):7.1f} images/s")


if __name__ == "__main__":
    main()
