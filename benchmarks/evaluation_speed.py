"""Evaluation throughput: 10,000 real and 10,000 synthetic 64 px images, features + all metrics.

    python benchmarks/evaluation_speed.py [--n 10000] [--features domain]

Real images: the LGG FLAIR slices at 64 px (3,350 slices, repeated with flips up to --n); synthetic images: --n
samples of the walking-skeleton LGG run (trained by `benchmarks/walking_skeleton.py lgg`). The domain network is
fitted beforehand on the LGG training split (a one-off cost, reported separately). The timed part is exactly
what `synthmed evaluate` does after loading: features of both sets and of the training set, FID with a bootstrap
interval, KID, PRDC, memorisation in feature and pixel space, MS-SSIM diversity of both sets.
Writes benchmarks/results/evaluation_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import synthmed
from synthmed.data import load_dataset
from synthmed.metrics import evaluate
from synthmed.metrics.features import DomainExtractor

ROOT = Path(__file__).resolve().parents[1]
LGG = ROOT.parent / "shared" / "data" / "lgg-mri" / "lgg_mri_128.npz"
RUN = ROOT / "runs" / "benchmarks" / "walking-skeleton-lgg"


def tile_with_flips(images: torch.Tensor, n: int) -> torch.Tensor:
    variants = [images, images.flip(-1), images.flip(-2), images.flip(-1, -2)]
    return torch.cat(variants)[:n] if n <= 4 * len(images) else torch.cat(variants * (n // len(images) + 1))[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--features", default="domain")
    parser.add_argument("--bootstrap", type=int, default=100)
    args = parser.parse_args()
    if not LGG.exists() or not (RUN / "config.yaml").exists():
        raise SystemExit(f"needs {LGG} and the run {RUN} (python benchmarks/walking_skeleton.py lgg)")
    train = load_dataset(LGG, channels="flair", size=64, split="train")
    everything = load_dataset(LGG, channels="flair", size=64, split="all").images
    real = tile_with_flips(everything, args.n)
    t0 = time.perf_counter()
    fake = synthmed.load(RUN).sample(args.n, seed=0)
    sample_seconds = time.perf_counter() - t0
    domain_path = ROOT / "runs" / "benchmarks" / "lgg_domain.json"
    t0 = time.perf_counter()
    if "domain" in args.features:
        DomainExtractor(in_channels=1, image_size=64).fit(train, progress=False).save(domain_path)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = evaluate(real, fake, train=train.images, features=tuple(args.features.split(",")),
                      domain_model=domain_path if "domain" in args.features else None, bootstrap=args.bootstrap,
                      progress=False)
    seconds = time.perf_counter() - t0
    doc = {
        "benchmark": "evaluation/speed",
        "command": f"python benchmarks/evaluation_speed.py --n {args.n} --features {args.features}",
        "n_real": len(real), "n_fake": len(fake), "n_train": len(train), "image_size": 64,
        "features": args.features, "bootstrap": args.bootstrap,
        "features_and_metrics_seconds": round(seconds, 1),
        "limit_seconds": 120, "within_limit": seconds <= 120,
        "breakdown_seconds": result.seconds,
        "one_off": {"domain_fit_seconds": round(fit_seconds, 1), "sampling_seconds": round(sample_seconds, 1)},
        "metrics": [m.to_dict() for m in result.metrics],
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = ROOT / "benchmarks" / "results" / "evaluation_speed.json"
    out.write_text(json.dumps(doc, indent=1))
    print(json.dumps({k: v for k, v in doc.items() if k != "metrics"}, indent=1))


if __name__ == "__main__":
    main()
