"""Translation throughput of ``synthmed.translate.translate_images`` (what ``synthmed translate`` runs), with tiling.

    python benchmarks/translation_speed.py                        # ~14 min on 2 AVX2 cores, ~5 min with AVX-512
    python benchmarks/translation_speed.py --models pix2pix --sizes 512 --repeats 3

Models (untrained weights: speed does not depend on them), built as a run trained at 256 px is loaded
(``synthmed.load``: channels_last when the recipe prefers it, networks in eval mode, so batch norm uses its running
statistics and dropout is off):

* ``pix2pix``: ``build_recipe("pix2pix", {}, DataInfo(kind="paired", 256 x 256, 1 -> 3 channels))``: U-Net depth 8
  (``unet256``), ngf 64, batch norm; direction AtoB.
* ``cyclegan``: ``build_recipe("cyclegan", {"generator": "resnet9"}, DataInfo(kind="unpaired", 256 x 256, 1 <-> 3
  channels))``: ResNet generator with 9 blocks, ngf 64, instance norm; direction AtoB (G_AB).

Inputs: random images in [-1, 1], one channel, 256 px (one tile each: whole-image forwards) and 512 px (tiled:
256 px tiles with overlap 64, 3 x 3 = 9 tiles per image, blended).

Runners, timed in interleaved blocks (A B, B A, ...) after one warm-up call each; the figure is the median:

* ``synthmed``: ``translate_images(recipe, images, "AtoB", tile=256, overlap=64, batch_size=4)`` on 4 images per
  call (as ``translate_split`` hands them over): at 256 px one forward of 4 whole images, at 512 px 36 tiles in 9
  forwards of 4, blended; the output comes back on the CPU.
* ``bare_network``: the same generator (a second copy, NCHW, PyTorch's kernels, eval mode) alone under
  ``torch.no_grad()`` on ready-cut batches of 4 (whole images, or the same 36 tiles): the network's share.
  ``ratio_vs_bare_network`` < 1 is what cutting, blending, the layout change and the eval-mode wrapper cost.

images/s counts input images (a 512 px image is 9 tile forwards). FLOPs per image: ``FlopCounterMode`` over the
generator's forward on one tile (or whole image) times the tiles per image (tiles overlap, so a 512 px image costs
9 x the FLOPs of a 256 px one, not 4 x);
MFU = FLOPs/image x images/s / the dense fp32 GEMM peak (best of the probes at the start and the end). Peak memory:
one more, untimed call per runner, the peak RSS above what was resident before it (``_common.PeakMemory``).

Writes benchmarks/results/translation_speed_<device>.json (``translation_speed_cpu.json`` on CPU) and prints a table.
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

from _common import ROOT, PeakMemory, gemm_peak, load_average, machine, source_state, sync
from synthmed.data.dataset import DataInfo
from synthmed.ops.cpu_conv import native_convolutions
from synthmed.ops.tiling import tile_starts
from synthmed.recipes import build_recipe
from synthmed.translate import translate_images

TRAIN_SIZE = 256
TILE, OVERLAP, BATCH = 256, 64, 4
IMAGES_PER_CALL = 4
MODELS: dict[str, dict[str, Any]] = {
    "pix2pix": {"recipe": "pix2pix", "kind": "paired", "options": {}, "network": "G",
                "label": "pix2pix U-Net depth 8 (unet256), ngf 64, batch norm, 1 -> 3 channels, trained at 256 px"},
    "cyclegan": {"recipe": "cyclegan", "kind": "unpaired", "options": {"generator": "resnet9"}, "network": "G_AB",
                 "label": "CycleGAN resnet9 (G_AB), ngf 64, instance norm, 1 -> 3 channels, trained at 256 px"},
}


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``; ``_common.machine`` records the architecture only)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        return None


def build(model: str, device: torch.device, channels_last: bool | None) -> Any:
    spec = MODELS[model]
    info = DataInfo(source="random", channels=1, height=TRAIN_SIZE, width=TRAIN_SIZE, split="train",
                    kind=spec["kind"], target_channels=3)
    torch.manual_seed(0)
    recipe = build_recipe(spec["recipe"], dict(spec["options"]), info)
    recipe.to(device, channels_last=recipe.prefers_channels_last if channels_last is None else channels_last)
    recipe.networks.eval()
    return recipe


def cut_tiles(images: torch.Tensor) -> torch.Tensor:
    """The tiles ``sliding_window`` feeds the network (whole images when they fit one tile), NCHW."""
    size = images.shape[-1]
    if size <= TILE:
        return images
    starts = tile_starts(size, TILE, OVERLAP)
    return torch.stack([images[b, :, y:y + TILE, x:x + TILE] for b in range(images.shape[0])
                        for y in starts for x in starts]).contiguous()


def time_runners(runners: dict[str, Callable[[], int]], seconds: float, repeats: int, device: torch.device
                 ) -> dict[str, dict[str, Any]]:
    """One warm-up call each (its time sizes the blocks), blocks of whole calls sized to ~seconds / (runners x
    repeats), interleaved."""
    call_s = {}
    for name, fn in runners.items():
        t0 = time.perf_counter()
        fn()  # also the first call's allocations and oneDNN primitive creation: blocks come out a little short
        sync(device)
        call_s[name] = time.perf_counter() - t0
    target = seconds / max(1, len(runners) * repeats)
    calls = {name: max(1, round(target / t)) for name, t in call_s.items()}
    rates: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            n = sum(runners[name]() for _ in range(calls[name]))
            sync(device)
            rates[name].append(n / (time.perf_counter() - t0))
    out = {}
    for name in names:  # after the timing: one untimed call each, from a trimmed heap
        with PeakMemory(device) as mem:
            runners[name]()
        out[name] = {"images_per_s": statistics.median(rates[name]), "blocks": [round(r, 3) for r in rates[name]],
                     "calls_per_block": calls[name], "warmup_call_seconds": round(call_s[name], 3),
                     "peak_memory": mem.to_dict()}
    return out


def count_flops(network: torch.nn.Module, batch: torch.Tensor) -> int:
    """FLOPs of one forward of ``network`` on ``batch`` (``FlopCounterMode``)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        network(batch)
    return int(counter.get_total_flops())


def measure(model: str, size: int, device: torch.device, seconds: float, repeats: int,
            per_call: int = IMAGES_PER_CALL) -> dict[str, Any]:
    spec = MODELS[model]
    recipe = build(model, device, None)
    bare = build(model, device, False).networks[spec["network"]]
    images = torch.rand(per_call, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tiles = cut_tiles(images).to(device)

    def synthmed() -> int:
        out = translate_images(recipe, images, "AtoB", tile=TILE, overlap=OVERLAP, batch_size=BATCH)
        assert out.shape == (per_call, 3, size, size)
        return per_call

    def bare_network() -> int:
        with torch.no_grad(), native_convolutions():
            for start in range(0, tiles.shape[0], BATCH):
                bare(tiles[start:start + BATCH])
        return per_call

    # Both runners do the same forwards: the network's FLOPs on one tile (or whole image) times the tiles per call.
    flops_call = count_flops(bare, tiles[:1]) * tiles.shape[0]
    result = time_runners({"synthmed": synthmed, "bare_network": bare_network}, seconds, repeats, device)
    for r in result.values():
        r["ratio_vs_bare_network"] = r["images_per_s"] / result["bare_network"]["images_per_s"]
    return {
        "label": spec["label"], "image_size": size, "tile": TILE, "overlap": OVERLAP, "batch_size": BATCH,
        "images_per_call": per_call, "tiles_per_image": tiles.shape[0] // per_call,
        "forwards_per_call": -(-tiles.shape[0] // BATCH), "channels_last": bool(recipe.prefers_channels_last),
        "gflop_per_image": flops_call / per_call / 1e9,
        "runners": result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="pix2pix,cyclegan", help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument("--sizes", default="256,512", help="input image sides (px), comma list")
    parser.add_argument("--seconds", type=float, default=30.0, help="timed seconds per model and size (all runners)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed blocks per runner (median)")
    parser.add_argument("--images-per-call", type=int, default=IMAGES_PER_CALL,
                        help="images per translate_images call (tiles of all of them are batched together)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    started = time.perf_counter()
    peak_start = gemm_peak(device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; GEMM peak {peak_start:.1f} "
          "GFLOP/s", flush=True)
    doc: dict[str, Any] = {
        "benchmark": "translation/speed",
        "command": "python " + " ".join(["benchmarks/translation_speed.py", *sys.argv[1:]]),
        "machine": {**machine(device), "cpu_model": cpu_model()}, "source": source_state(),
        "load_average_start": load_average(),
        "data": f"random images uniform in [-1, 1], 1 channel, {args.images_per_call} per call; untrained networks "
                "(speed does not depend on the weights)",
        "results": {},
    }
    for model in models:
        for size in sizes:
            entry = measure(model, size, device, args.seconds, args.repeats, args.images_per_call)
            doc["results"][f"{model}_{size}"] = entry
            for r, v in entry["runners"].items():
                print(f"{model:8s} {size:4d} px {r:12s} {v['images_per_s']:8.2f} img/s  "
                      f"x{v['ratio_vs_bare_network']:.2f} vs bare  +{v['peak_memory']['above_start_mb']} MB  "
                      f"blocks {v['blocks']}", flush=True)
    peak_end = gemm_peak(device)
    peak = max(peak_start, peak_end)
    for entry in doc["results"].values():
        for r in entry["runners"].values():
            r["mfu"] = entry["gflop_per_image"] * r["images_per_s"] / peak
    doc["gemm_peak_gflop_s"] = {"start": round(peak_start, 1), "end": round(peak_end, 1), "used": round(peak, 1),
                                "how": "best of 6 fp32 2048x2048 matmuls at the start and at the end; 'used' (the "
                                       "higher) is the MFU denominator"}
    doc["load_average_end"] = load_average()
    doc["total_seconds"] = round(time.perf_counter() - started, 1)
    doc["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = args.out or ROOT / "benchmarks" / "results" / f"translation_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"\nGEMM peak {peak:.1f} GFLOP/s (start {peak_start:.1f}, end {peak_end:.1f})")
    print(f"{'model':8s} {'size':>5s} {'runner':12s} {'img/s':>8s} {'vs bare':>8s} {'GFLOP/img':>9s} {'MFU':>6s} "
          f"{'+MB':>6s}")
    for key, entry in doc["results"].items():
        model = key.rsplit("_", 1)[0]
        for r, v in entry["runners"].items():
            mem = v["peak_memory"]["above_start_mb"]
            print(f"{model:8s} {entry['image_size']:5d} {r:12s} {v['images_per_s']:8.2f} "
                  f"{v['ratio_vs_bare_network']:8.2f} {entry['gflop_per_image']:9.1f} {v['mfu']:6.1%} "
                  f"{(mem if mem is not None else float('nan')):6.0f}")
    print(f"\nwrote {out} in {doc['total_seconds']} s")


if __name__ == "__main__":
    main()
