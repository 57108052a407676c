"""Sampling throughput through ``synthmed.load()`` (what ``synthmed sample`` runs): DCGAN 64 px, default widths.

    python benchmarks/load_sampling_speed.py                  # about 1 minute on 2 cores

Trains a 1-step run on 256 random 64 px images (speed does not depend on the weights), loads it, then times
``model.sample(n=2048, seed=0)`` best of 3 after a warm-up, with torch's default threads: once as ``load()``
returns the model, once with its networks moved back to NCHW (what load() returned before it applied the
trainer's memory format; the same-run reference, since shared machines vary +-30% between runs), each in
--rounds interleaved rounds. Prints images/s and writes benchmarks/results/load_sampling_speed_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import synthmed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, load_average, machine, source_state  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both layouts")
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
        rates: dict[str, list[float]] = {f"load() ({layout})": [], "NCHW (before the fix)": []}
        for _ in range(args.rounds):
            model.recipe.networks.to(memory_format=torch.channels_last if layout == "channels_last"
                                     else torch.contiguous_format)
            rates[f"load() ({layout})"].append(best_rate(model, args.n, args.repeats))
            model.recipe.networks.to(memory_format=torch.contiguous_format)
            rates["NCHW (before the fix)"].append(best_rate(model, args.n, args.repeats))
            print("  ".join(f"{k}: {v[-1]:7.1f} images/s" for k, v in rates.items()), flush=True)
    doc = {
        "benchmark": "sampling through synthmed.load()",
        "command": "python " + " ".join([str(Path(sys.argv[0]).name), *sys.argv[1:]]),
        "model": "DCGAN 64 px, default recipe widths, 1 grey channel, EMA generator, cpu_kernels auto",
        "n_images": args.n, "best_of": args.repeats, "rounds": args.rounds, "threads": torch.get_num_threads(),
        "images_per_s": rates,
        "median_images_per_s": {k: round(statistics.median(v), 1) for k, v in rates.items()},
        "machine": machine(torch.device("cpu")), "source": source_state(), "load_average_end": load_average(),
    }
    out = RESULTS / "load_sampling_speed_cpu.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
