"""Scoring speed of f-AnoGAN (one encoder pass per image) against AnoGAN (a latent search per image), images/s, on
one trained anomaly run and the same images; with masks, each method's image AUROC on those images.

    python benchmarks/anomaly_speed.py --run runs/lgg-anomaly                     # its test split, 64 images
    python benchmarks/anomaly_speed.py --run runs/lgg-anomaly --data scans.npz --n-images 128 --batch-size 64
    python benchmarks/anomaly_speed.py --run runs/lgg-anomaly --device cuda --anogan-steps 500 --repeats 5

The model is the run as ``synthmed.load`` returns it (networks in eval mode, the run's CPU kernels). Images are
read as ``synthmed detect`` reads them (:mod:`synthmed.detect`), so the benchmark scores what detection scores:
``--data`` (an npz: :func:`~synthmed.detect.read_npz_input`, or a file or folder: :func:`~synthmed.detect.read_files`;
the run's recorded intensity mapping and ``normalize``, at the model's size), or else the run's held-out ``--split``
(test by default, :func:`~synthmed.detect.read_split`: read as the run read its training split); ``--n-images`` of
them spread evenly over the set (normal and lesioned slices alike), in [-1, 1].

Methods (:meth:`synthmed.recipes.anomaly.AnomalyGAN.score`), each called on all the images at once:

* ``fanogan``: ``fanogan_scores(images, batch_size)``: E, G and D's features once per image.
* ``anogan``: ``anogan_scores(images, steps=--anogan-steps, restarts=--restarts, batch_size)``: Adam on z with G and
  D frozen, ``--anogan-steps`` forward + backward passes per image (the paper's 500 by default), batched.

Timing: one untimed warm-up call each (AnoGAN with 2 search steps), then ``--repeats`` interleaved blocks (A B, B A,
...): an AnoGAN block is one call, an f-AnoGAN block as many calls as fill about as long as its warm-up suggests
for ``--fanogan-seconds`` (one call over a few images is too short to time alone). images/s is the median over
blocks; ``speedup`` = f-AnoGAN images/s / AnoGAN images/s. Detection (when the images have masks: an image is
anomalous when its mask is not empty, :func:`synthmed.recipes.anomaly.has_lesion`, the rule training and
``synthmed detect`` use): :func:`synthmed.metrics.anomaly.image_metrics` of each method's scores from its last
call (both are deterministic: AnoGAN's starting points are seeded).

Writes benchmarks/results/anomaly_speed_<device>.json (or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import synthmed
from _common import ROOT, load_average, machine, source_state, sync
from synthmed.detect import Inputs, read_files, read_npz_input, read_split
from synthmed.errors import ConfigError, SynthmedError
from synthmed.metrics.anomaly import image_metrics
from synthmed.ops import kernels
from synthmed.recipes.anomaly import AnomalyGAN, AnomalyScores, has_lesion
from synthmed.translate import spread_indices

WARMUP_SEARCH_STEPS = 2


# --- inputs ------------------------------------------------------------------------------------------------------
def load_images(model: Any, recipe: AnomalyGAN, data: Path | None, split: str) -> tuple[Inputs, str]:
    """The images to score, read as ``synthmed detect`` reads them: ``data`` (an npz, a file or a folder), or the
    run's held-out ``split``."""
    if data is not None:
        if data.suffix.lower() == ".npz":
            return read_npz_input(model, recipe, data), f"{data} (all images, as synthmed detect reads an npz)"
        return read_files(recipe, data, None), f"{data} (all images, as synthmed detect reads files)"
    if model.config.data.split == "all":
        raise ConfigError(f"{model.run_dir} trained on split 'all', so it holds nothing out; give --data")
    return read_split(model, recipe, split), f"{model.config.data.source or 'breastmnist'}, split {split!r} as the " \
                                             "run read it"


def pick(inputs: Inputs, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` images spread over the set, and whether each is anomalous (:func:`has_lesion`) when it has masks."""
    if len(inputs.names) == 0:
        raise ConfigError("no images to score (an empty split?)")
    index = torch.tensor(spread_indices(len(inputs.names), n))
    images = inputs.images.index_select(0, index).float()
    anomalous = None if inputs.masks is None else has_lesion(torch.from_numpy(inputs.masks)).index_select(0, index)
    return images, anomalous


# --- timing ------------------------------------------------------------------------------------------------------
def timed(fn: Callable[[], AnomalyScores], device: torch.device) -> tuple[float, AnomalyScores]:
    started = time.perf_counter()
    scores = fn()
    sync(device)
    return time.perf_counter() - started, scores


def time_methods(methods: dict[str, Callable[[], AnomalyScores]], warmups: dict[str, Callable[[], AnomalyScores]],
                 n_images: int, repeats: int, fanogan_seconds: float, device: torch.device
                 ) -> tuple[dict[str, dict[str, Any]], dict[str, AnomalyScores]]:
    """Interleaved blocks per method after one warm-up call each; images/s per block, their median."""
    warm = {name: timed(warmups[name], device)[0] for name in methods}
    calls = {name: 1 for name in methods}
    calls["fanogan"] = max(1, round(fanogan_seconds / max(warm["fanogan"], 1e-6)))
    rates: dict[str, list[float]] = {name: [] for name in methods}
    last: dict[str, AnomalyScores] = {}
    names = list(methods)
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            seconds = 0.0
            for _ in range(calls[name]):
                elapsed, last[name] = timed(methods[name], device)
                seconds += elapsed
            rates[name].append(calls[name] * n_images / seconds)
            print(f"  block {rep + 1}/{repeats} {name:8s} {rates[name][-1]:10.2f} img/s", flush=True)
    out = {name: {"images_per_s": statistics.median(r), "ms_per_image": 1000.0 / statistics.median(r),
                  "blocks": [round(v, 3) for v in r], "calls_per_block": calls[name],
                  "warmup_call_seconds": round(warm[name], 3)} for name, r in rates.items()}
    return out, last


def detection(last: dict[str, AnomalyScores], anomalous: torch.Tensor | None) -> dict[str, Any]:
    if anomalous is None:
        return {"note": "the images have no masks: no AUROC"}
    return {name: image_metrics(scores.score, anomalous) for name, scores in last.items()}


# --- main --------------------------------------------------------------------------------------------------------
def describe_run(model: Any, recipe: AnomalyGAN) -> dict[str, Any]:
    options = recipe.config
    return {"dir": str(model.run_dir), "step": model.step, "arch": options.arch, "latent_dim": options.latent_dim,
            "g_channels": options.g_channels, "d_channels": options.d_channels, "kappa": options.kappa,
            "encoder_loss": options.encoder_loss, "image_size": recipe.train_size,
            "channels": recipe.data_info.channels,
            "generator": "G_ema" if "G_ema" in recipe.networks else "G"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained anomaly run directory")
    parser.add_argument("--data", type=Path, default=None, help="npz or folder to score [default: the run's --split]")
    parser.add_argument("--split", default="test", choices=("test", "val"), help="held-out split without --data")
    parser.add_argument("--n-images", type=int, default=64, help="images scored per call, spread over the set")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass / per joint search")
    parser.add_argument("--anogan-steps", type=int, default=500, help="AnoGAN search steps (the paper's Gamma)")
    parser.add_argument("--restarts", type=int, default=1, help="AnoGAN starting points per image")
    parser.add_argument("--lam", type=float, default=0.1, help="AnoGAN feature-loss weight lambda")
    parser.add_argument("--anogan-lr", type=float, default=0.05, help="AnoGAN search learning rate (Adam on z)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed blocks per method (median)")
    parser.add_argument("--fanogan-seconds", type=float, default=1.0, help="about how long an f-AnoGAN block lasts")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    model = synthmed.load(args.run, device=device.type)
    recipe = model.recipe
    if not isinstance(recipe, AnomalyGAN):
        raise ConfigError(f"{args.run}: recipe {recipe.name!r} is not the anomaly recipe")
    inputs, described = load_images(model, recipe, args.data, args.split)
    images, anomalous = pick(inputs, args.n_images)
    n = images.shape[0]
    search = {"restarts": args.restarts, "lam": args.lam, "lr": args.anogan_lr, "batch_size": args.batch_size,
              "seed": 0}
    methods = {"fanogan": lambda: recipe.fanogan_scores(images, batch_size=args.batch_size),
               "anogan": lambda: recipe.anogan_scores(images, steps=args.anogan_steps, **search)}
    warmups = {"fanogan": methods["fanogan"],
               "anogan": lambda: recipe.anogan_scores(images, steps=WARMUP_SEARCH_STEPS, **search)}
    print(f"{n} images ({described}), {args.anogan_steps} AnoGAN steps, batch {args.batch_size}", flush=True)
    with kernels(model.config.train.cpu_kernels):
        results, last = time_methods(methods, warmups, n, args.repeats, args.fanogan_seconds, device)
    return {
        "run": describe_run(model, recipe),
        "data": {"images": described, "n_images": n,
                 "n_anomalous": None if anomalous is None else int(anomalous.sum())},
        "settings": {"batch_size": args.batch_size, "anogan_steps": args.anogan_steps, "restarts": args.restarts,
                     "lam": args.lam, "anogan_lr": args.anogan_lr, "repeats": args.repeats,
                     "threads": torch.get_num_threads()},
        "methods": results,
        "speedup_fanogan_vs_anogan": results["fanogan"]["images_per_s"] / results["anogan"]["images_per_s"],
        "detection": detection(last, anomalous),
    }


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "benchmark": "anomaly/speed",
        "command": "python " + " ".join(["benchmarks/anomaly_speed.py", *sys.argv[1:]]),
        "machine": machine(device), "source": source_state(), "load_average_start": load_average(),
    }
    try:
        doc.update(measure(args, device))
    except SynthmedError as exc:  # a bad run or data: one line, as the CLI says it
        sys.exit(f"anomaly_speed: {exc}")
    doc["load_average_end"] = load_average()
    doc["total_seconds"] = round(time.perf_counter() - started, 1)
    doc["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = args.out or ROOT / "benchmarks" / "results" / f"anomaly_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"\n{'method':8s} {'img/s':>10s} {'ms/img':>10s} {'AUROC':>7s}")
    for name, result in doc["methods"].items():
        auroc = doc["detection"].get(name, {}).get("auroc")
        print(f"{name:8s} {result['images_per_s']:10.2f} {result['ms_per_image']:10.2f} "
              f"{'-' if auroc is None else f'{auroc:.3f}':>7s}")
    print(f"speed-up f-AnoGAN / AnoGAN: {doc['speedup_fanogan_vs_anogan']:.1f}x")
    print(f"\nwrote {out} in {doc['total_seconds']} s")


if __name__ == "__main__":
    main()
