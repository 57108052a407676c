"""Sampling and feature-extraction throughput and peak memory, each against a bare reference in the same run.

    python benchmarks/inference_speed.py                      # about 3 minutes on 2 cores
    python benchmarks/inference_speed.py --only sampling --repeats 7

Sampling (images/s): ``recipe.sample`` as ``synthmed sample`` runs it (EMA generator in eval mode, batches of 256,
crop + clamp, copy to the CPU) for the default 28 px DCGAN (32 channels) and the DCGAN 64 px (64 channels),
against the reference: the same generator called bare under ``torch.no_grad()`` on the same latents, NCHW, with
PyTorch's own convolution kernels. Untrained weights: speed does not depend on them.
Features (images/s): each extractor's ``extract()`` (validation, batching, preprocessing, float64 output) on the
embedded BreastMNIST (546 training images, bilinear to 64 px, repeated to --n), against the bare network forward
on an already-preprocessed batch (``inception``: the TorchScript module on 299 px input; ``domain``: its
embedding network, fitted for 20 steps only: speed does not need a good fit). ``radiomics`` has no network and no
reference. MFU = counted FLOPs (``FlopCounterMode``) x images/s / the GEMM peak measured in this run.
Runners are timed in interleaved blocks (A B B A ...) and the median is reported; peak memory is measured in one
more, untimed block: the peak RSS above what was resident before it (``_common.PeakMemory``; CUDA:
max_memory_allocated).
Writes benchmarks/results/inference_speed_<device>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from _common import ROOT, PeakMemory, gemm_peak, load_average, machine, source_state, sync
from synthmed.data import load_dataset
from synthmed.data.dataset import DataInfo
from synthmed.metrics.features import get_extractor
from synthmed.metrics.features.base import FeatureExtractor
from synthmed.ops.cpu_conv import native_convolutions
from synthmed.recipes import build_recipe

SAMPLING = {
    "dcgan28": {"size": 28, "options": {}, "label": "DCGAN 28 px (default recipe, 32 channels)"},
    "dcgan64": {"size": 64, "options": {"g_channels": 64, "d_channels": 64}, "label": "DCGAN 64 px (64 channels)"},
}


def time_interleaved(runners: dict[str, Callable[[], int]], repeats: int, device: torch.device
                     ) -> dict[str, dict[str, Any]]:
    """Each runner returns the number of images it processed; one warm-up call each, then interleaved blocks."""
    for fn in runners.values():
        fn()
    rates: dict[str, list[float]] = {k: [] for k in runners}
    names = list(runners)
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            n = runners[name]()
            sync(device)
            rates[name].append(n / (time.perf_counter() - t0))
    out = {}
    for name in names:  # after the timing: one untimed block each, from a trimmed heap
        with PeakMemory(device) as mem:
            runners[name]()
        out[name] = {"images_per_s": statistics.median(rates[name]), "blocks": [round(r, 1) for r in rates[name]],
                     "peak_memory": mem.to_dict()}
    return out


def flops_per_image(fn: Callable[[], Any], n: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / n


def measure_sampling(name: str, device: torch.device, n: int, repeats: int, peak: float) -> dict[str, Any]:
    cfg = SAMPLING[name]
    info = DataInfo(source="random", channels=1, height=cfg["size"], width=cfg["size"], split="train")
    torch.manual_seed(0)
    recipe = build_recipe("unconditional", cfg["options"], info, ema_beta=0.999)
    recipe.to(device, channels_last=recipe.prefers_channels_last)
    bare = build_recipe("unconditional", cfg["options"], info).networks["G"].to(device).eval()
    latents = torch.randn(n, recipe.latent_dim, generator=torch.Generator().manual_seed(0)).to(device)

    def synthmed_sample() -> int:
        return len(recipe.sample(n, seed=0, batch_size=256))

    def plain() -> int:
        with torch.no_grad(), native_convolutions():
            for start in range(0, n, 256):
                bare(latents[start:start + 256])
        return n

    result = time_interleaved({"synthmed": synthmed_sample, "plain": plain}, repeats, device)
    per_image = flops_per_image(lambda: bare(latents[:256]), 256)
    for r in result.values():
        r["ratio_vs_plain"] = r["images_per_s"] / result["plain"]["images_per_s"]
        r["mfu"] = per_image * r["images_per_s"] / 1e9 / peak
    return {"label": cfg["label"], "n": n, "batch_size": 256, "gflop_per_image": per_image / 1e9,
            "runners": result}


def bare_network(extractor: FeatureExtractor, batch: torch.Tensor) -> tuple[Callable[[], Any], torch.Tensor] | None:
    """The extractor's network on an already-preprocessed batch, or None (no network)."""
    if extractor.name == "inception":
        from synthmed.metrics.features.inception import INPUT_SIZE

        x = torch.rand(batch.shape[0], 3, INPUT_SIZE, INPUT_SIZE, device=extractor.device) * 2 - 1
        model = extractor.model  # type: ignore[attr-defined]
        if extractor.interface == "stylegan":  # type: ignore[attr-defined]
            x = ((x + 1) * 127.5).round().to(torch.uint8)
            return (lambda: model(x, return_features=True)), x
        return (lambda: model(x)), x
    if extractor.name == "domain":
        net = extractor.net  # type: ignore[attr-defined]
        x = extractor._layout(batch.to(extractor.device))  # type: ignore[attr-defined]
        return (lambda: net.embed(x)), x
    return None


def measure_features(name: str, images: torch.Tensor, train: Any, device: torch.device, repeats: int,
                     peak: float) -> dict[str, Any]:
    if name == "domain":
        extractor = get_extractor("domain", dataset=train, steps=20, device=device)  # speed does not need a fit
    else:
        extractor = get_extractor(name, device=device)
    n = len(images)
    runners: dict[str, Callable[[], int]] = {"synthmed": lambda: len(extractor.extract(images))}
    bare = bare_network(extractor, images[: extractor.default_batch_size])
    per_image = None
    if bare is not None:
        fn, x = bare
        batches = -(-n // len(x))

        def reference() -> int:
            with torch.no_grad():
                for _ in range(batches):
                    fn()
            return batches * len(x)

        runners["bare_network"] = reference
        per_image = flops_per_image(fn, len(x))
    result = time_interleaved(runners, repeats, device)
    for r in result.values():
        if "bare_network" in result:
            r["ratio_vs_bare_network"] = r["images_per_s"] / result["bare_network"]["images_per_s"]
        if per_image:
            r["mfu"] = per_image * r["images_per_s"] / 1e9 / peak
    return {"n": n, "image_size": int(images.shape[-1]), "batch_size": extractor.default_batch_size,
            "dim": extractor.dim, "gflop_per_image": None if per_image is None else per_image / 1e9,
            "runners": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["sampling", "features"], default=None)
    parser.add_argument("--features", default="domain,radiomics,inception")
    parser.add_argument("--n", type=int, default=1024, help="images per block (sampling, domain, radiomics)")
    parser.add_argument("--n-inception", type=int, default=64, help="images per block for inception (slow on CPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.perf_counter()
    peak = gemm_peak(device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; GEMM peak {peak:.1f} GFLOP/s",
          flush=True)
    doc: dict[str, Any] = {
        "benchmark": "inference/speed",
        "command": "python " + " ".join(["benchmarks/inference_speed.py", *sys.argv[1:]]),
        "machine": machine(device), "source": source_state(), "load_average_start": load_average(),
        "gemm_peak_gflop_s": round(peak, 1), "sampling": {}, "features": {}, "skipped": {},
    }
    if args.only != "features":
        for name in SAMPLING:
            doc["sampling"][name] = entry = measure_sampling(name, device, args.n, args.repeats, peak)
            for r, v in entry["runners"].items():
                print(f"sampling {name:8s} {r:12s} {v['images_per_s']:9.0f} img/s  x{v['ratio_vs_plain']:.2f}  "
                      f"MFU {v['mfu']:.1%}  +{v['peak_memory']['above_start_mb']} MB", flush=True)
    if args.only != "sampling":
        train = load_dataset("breastmnist", split="train")  # the embedded 28 px copy, bilinear to 64 px
        base = F.interpolate(train.images, size=64, mode="bilinear", align_corners=False).clamp(-1, 1)
        train = replace(train, images=base, info=replace(train.info, height=64, width=64))
        for name in [f.strip() for f in args.features.split(",") if f.strip()]:
            n = args.n_inception if name == "inception" else args.n
            images = torch.cat([base] * (n // len(base) + 1))[:n]
            try:
                doc["features"][name] = entry = measure_features(name, images, train, device, args.repeats, peak)
            except Exception as exc:  # noqa: BLE001 (e.g. no Inception weights offline: say so and go on)
                doc["skipped"][name] = f"{type(exc).__name__}: {exc}"
                print(f"features {name}: skipped ({doc['skipped'][name]})", flush=True)
                continue
            for r, v in entry["runners"].items():
                ratio = v.get("ratio_vs_bare_network")
                mfu = v.get("mfu")
                print(f"features {name:9s} {r:12s} {v['images_per_s']:9.1f} img/s"
                      + (f"  x{ratio:.2f}" if ratio else "") + (f"  MFU {mfu:.1%}" if mfu else "")
                      + f"  +{v['peak_memory']['above_start_mb']} MB", flush=True)
    doc["load_average_end"] = load_average()
    doc["total_seconds"] = round(time.perf_counter() - started, 1)
    doc["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = args.out or ROOT / "benchmarks" / "results" / f"inference_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out} in {doc['total_seconds']} s")


if __name__ == "__main__":
    main()
