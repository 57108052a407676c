"""Segmentation throughput of ``synthmed segment`` (``synthmed.api.segment``), images/s, with tiling.

    python benchmarks/segmentation_speed.py                       # 128 and 512 px, unet, 16 images per call
    python benchmarks/segmentation_speed.py --sizes 512 --images 8 --repeats 3 --seconds 20
    python benchmarks/segmentation_speed.py --device cuda --images 64

The run: a tiny run trained in a temporary folder for ``--train-steps`` steps (speed does not depend on the
weights) with ``synthmed.train`` on an NPZ of 3-channel 128 px uint8 images (LGG-like) and binary masks
(``--pair image:mask``), recipe ``--recipe`` (unet by default; segan and pix2pix-seg segment with the same U-Net),
the benchmark's width: base_channels 32 (the recipes' default), the default depth (5 at 128 px). Everything
segments with the run as ``synthmed.load`` returns it (channels_last, networks in eval mode, the run's CPU kernels).

Inputs: ``--images`` random RGB PNG files per size, written to a temporary folder: 128 px (one whole-image forward
each) and 512 px (tiles of the training size, 128, overlap 32: 5 x 5 = 25 tiles per image, blended).

Runners, timed in interleaved blocks (A B C D, D C B A, ...) after warm-up calls; the figure is the median, with
the blocks and their spread:

* ``command``: ``synthmed.api.segment(run, folder, out)``: what ``synthmed segment RUN FOLDER --out OUT`` runs
  after the interpreter has started: load the run, read and check every PNG, segment file by file (tiles of 4 per
  forward), threshold, write one PNG mask per input (a new output folder per call).
* ``files``: ``synthmed.segment.segment_files`` on a run loaded once: the command without loading the run.
* ``predict``: ``synthmed.segment.predict_labels`` on the images already in memory, one image per call as
  ``segment_files`` hands them over (tiling, blending, threshold): the model's forwards without file I/O.
* ``bare_network``: the segmentor alone (a second copy, NCHW, PyTorch's kernels, eval mode) under
  ``torch.no_grad()`` on ready-cut tiles, the same forwards (per image: whole, or its 25 tiles in batches of 4).
  ``ratio_vs_bare_network`` < 1 is what loading, file I/O, tiling, blending and thresholding cost.

images/s counts input images. FLOPs per image: ``FlopCounterMode`` over the segmentor's forward on one tile (or
whole image) times the tiles per image; MFU = FLOPs/image x images/s / the dense fp32 GEMM peak (best of the probes
at the start and the end). Peak memory: one more, untimed call per runner (``_common.PeakMemory``).

Writes benchmarks/results/segmentation_speed_<device>.json (``segmentation_speed_cpu.json`` on CPU) and prints a
table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import synthmed
from _common import ROOT, gemm_peak, load_average, machine, source_state
from synthmed import api
from synthmed import segment as sg
from synthmed.ops import kernels
from synthmed.ops.cpu_conv import native_convolutions
from synthmed.ops.tiling import tile_starts
from synthmed.translate import input_files, read_jobs
from translation_speed import count_flops, cpu_model, time_runners

TRAIN_SIZE = 128
CHANNELS = 3
BASE_CHANNELS = 32
BATCH = 4  # tiles per forward: the command's default --batch-size
RECIPES = ("unet", "segan", "pix2pix-seg")


def train_run(root: Path, recipe: str, device: str, steps: int) -> Path:
    """A run trained for ``steps`` steps on 32 random 128 px RGB images with disc masks (NPZ, 16 patients)."""
    rng = np.random.default_rng(0)
    n = 32
    yy, xx = np.mgrid[:TRAIN_SIZE, :TRAIN_SIZE]
    centres = rng.integers(24, TRAIN_SIZE - 24, (n, 2))
    masks = np.stack([((yy - cy) ** 2 + (xx - cx) ** 2 < 15**2) for cy, cx in centres]).astype(np.uint8)
    images = rng.integers(0, 120, (n, TRAIN_SIZE, TRAIN_SIZE, CHANNELS)).astype(np.uint8)
    images += (100 * masks[..., None]).astype(np.uint8)
    data = root / "train.npz"
    np.savez(data, images=images, masks=masks, patient=np.arange(n) // 2)
    result = synthmed.train(data, recipe=recipe, out=root / "run", pair="image:mask", base_channels=BASE_CHANNELS,
                            steps=steps, batch_size=4, device=device, sample_every=10**6, checkpoint_every=steps,
                            progress=False)
    return Path(result.run_dir)


def write_inputs(folder: Path, n: int, size: int) -> None:
    """``n`` random RGB PNG files of ``size`` px."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(size)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, CHANNELS), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def image_tiles(image: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """The tiles ``sliding_window`` feeds the network for one (C, H, W) image (the image when it fits one tile)."""
    size = image.shape[-1]
    if size <= tile:
        return image[None]
    starts = tile_starts(size, tile, overlap)
    return torch.stack([image[:, y:y + tile, x:x + tile] for y in starts for x in starts]).contiguous()


def spread(blocks: list[float]) -> dict[str, float]:
    """Min, max and (max - min) / median of the blocks' images/s."""
    median = statistics.median(blocks)
    return {"min": min(blocks), "max": max(blocks), "relative_range": (max(blocks) - min(blocks)) / median}


def measure(run: Path, size: int, folder: Path, scratch: Path, device: torch.device, seconds: float, repeats: int,
            warmup: int) -> dict[str, Any]:
    model = synthmed.load(run, device=str(device))
    recipe = model.recipe
    cpu_kernels = model.config.train.cpu_kernels
    tile = int(recipe.training_size)
    overlap = tile // 4  # the command's default
    files = input_files(folder)
    images = [job.file.images for job in read_jobs(recipe, files, folder, "AtoB", None, None)]  # (1, C, H, W) each
    n = len(images)
    bare = synthmed.load(run, device=str(device)).recipe.networks["S"]
    bare.to(memory_format=torch.contiguous_format).eval()
    tiles = [image_tiles(x[0], tile, overlap).to(device) for x in images]
    outputs = itertools.count()

    def command() -> int:
        out = scratch / f"command_{size}_{next(outputs)}"
        result = api.segment(run, folder, out, device=str(device), progress=False)
        assert len(result.outputs) == n
        return n

    def segment_files() -> int:
        out = scratch / f"files_{size}_{next(outputs)}"
        with kernels(cpu_kernels):
            result = sg.segment_files(model, folder, out)
        assert len(result.outputs) == n
        return n

    def predict() -> int:
        with kernels(cpu_kernels):
            for x in images:
                labels = sg.predict_labels(recipe, x, batch_size=BATCH)
        assert labels.shape == (1, size, size)
        return n

    def bare_network() -> int:
        with torch.no_grad(), native_convolutions():
            for t in tiles:
                for start in range(0, t.shape[0], BATCH):
                    bare(t[start:start + BATCH])
        return n

    runners: dict[str, Callable[[], int]] = {"command": command, "files": segment_files, "predict": predict,
                                             "bare_network": bare_network}
    for fn in runners.values():  # untimed calls before time_runners' own warm-up call (which sizes the blocks)
        for _ in range(warmup):
            fn()
    flops_image = count_flops(bare, tiles[0][:1]) * tiles[0].shape[0]
    result = time_runners(runners, seconds, repeats, device)
    for r in result.values():
        r["ratio_vs_bare_network"] = r["images_per_s"] / result["bare_network"]["images_per_s"]
        r["spread"] = spread(r["blocks"])
    return {
        "image_size": size, "training_size": tile, "tile": tile, "overlap": overlap, "batch_size": BATCH,
        "images_per_call": n, "tiles_per_image": int(tiles[0].shape[0]),
        "forwards_per_image": -(-int(tiles[0].shape[0]) // BATCH), "channels_last": bool(recipe.prefers_channels_last),
        "gflop_per_image": flops_image / 1e9, "runners": result,
    }


def add_mfu(doc: dict[str, Any], peak_start: float, peak_end: float) -> float:
    """Each runner's MFU against the higher of the two GEMM peaks (recorded in ``doc``); returns that peak."""
    peak = max(peak_start, peak_end)
    doc["gemm_peak_gflop_s"] = {
        "start": round(peak_start, 1), "end": round(peak_end, 1), "used": round(peak, 1),
        "how": "best of 6 fp32 2048x2048 matmuls before and after the measurements; MFU uses the higher",
    }
    for entry in doc["results"].values():
        gflop = entry["gflop_per_image"]
        for runner in entry["runners"].values():
            runner["mfu"] = gflop * runner["images_per_s"] / peak
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128,512", help="input image sides (px), comma list")
    parser.add_argument("--images", type=int, default=16, help="PNG files per size (one segment call each)")
    parser.add_argument("--recipe", default="unet", choices=RECIPES, help="recipe of the tiny run")
    parser.add_argument("--train-steps", type=int, default=2, help="training steps of the tiny run")
    parser.add_argument("--seconds", type=float, default=30.0, help="timed seconds per size (all runners)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed blocks per runner (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per runner before timing")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    sizes = [int(part) for part in args.sizes.split(",") if part.strip()]
    peak_start = gemm_peak(device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; GEMM peak {peak_start:.1f} "
          "GFLOP/s", flush=True)
    doc: dict[str, Any] = {
        "benchmark": "segmentation/speed",
        "command": "python " + " ".join(["benchmarks/segmentation_speed.py", *sys.argv[1:]]),
        "machine": {**machine(device), "cpu_model": cpu_model()}, "source": source_state(),
        "load_average_start": load_average(),
        "run": f"recipe {args.recipe}, trained {args.train_steps} steps at {TRAIN_SIZE} px on random "
               f"{CHANNELS}-channel images with disc masks; U-Net base_channels {BASE_CHANNELS}, default depth (speed "
               "does not depend on the weights)",
        "data": f"{args.images} random RGB PNG files per size",
        "results": {},
    }
    with tempfile.TemporaryDirectory(prefix="segmentation_speed_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        run = train_run(root, args.recipe, args.device, args.train_steps)
        doc["train_seconds"] = round(time.perf_counter() - t0, 1)
        for size in sizes:
            folder = root / f"inputs_{size}"
            write_inputs(folder, args.images, size)
            entry = measure(run, size, folder, root / "outputs", device, args.seconds, args.repeats, args.warmup)
            doc["results"][str(size)] = entry
            for r, v in entry["runners"].items():
                print(f"{size:4d} px {r:12s} {v['images_per_s']:8.2f} img/s  x{v['ratio_vs_bare_network']:.2f} vs bare"
                      f"  +{v['peak_memory']['above_start_mb']} MB  blocks {v['blocks']}", flush=True)
    peak_end = gemm_peak(device)
    peak = add_mfu(doc, peak_start, peak_end)
    doc["load_average_end"] = load_average()
    doc["total_seconds"] = round(time.perf_counter() - started, 1)
    doc["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = args.out or ROOT / "benchmarks" / "results" / f"segmentation_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"\nGEMM peak {peak:.1f} GFLOP/s (start {peak_start:.1f}, end {peak_end:.1f})")
    print(f"{'size':>5s} {'runner':12s} {'img/s':>8s} {'spread':>7s} {'vs bare':>8s} {'GFLOP/img':>9s} {'MFU':>6s} "
          f"{'+MB':>6s}")
    for entry in doc["results"].values():
        for r, v in entry["runners"].items():
            mem = v["peak_memory"]["above_start_mb"]
            print(f"{entry['image_size']:5d} {r:12s} {v['images_per_s']:8.2f} {v['spread']['relative_range']:7.1%} "
                  f"{v['ratio_vs_bare_network']:8.2f} {entry['gflop_per_image']:9.2f} {v['mfu']:6.1%} "
                  f"{(mem if mem is not None else float('nan')):6.0f}")
    print("spread: (max - min) / median of the timed blocks; vs bare: against the segmentor alone on ready-cut tiles")
    print(f"\nwrote {out} in {doc['total_seconds']} s")


if __name__ == "__main__":
    main()
