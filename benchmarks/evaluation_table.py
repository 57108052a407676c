"""Sanity table for the evaluation: on BreastMNIST, distances must order real < generator < degraded.

    python benchmarks/evaluation_table.py [--features domain,radiomics,inception] [--run RUN]

Reference set: the 156 held-out test images. Compared sets (156 images each):
  real train   156 random training images (same distribution: small distance)
  generator    156 samples of the walking-skeleton default run (trained if --run is not given)
  blurred      156 training images under a Gaussian blur (sigma 1.5 px)
  noise        156 images of uniform noise
The domain network is fitted once on the 546 training images and saved beside the results. Writes
benchmarks/results/evaluation_breastmnist.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch

from synthmed.data import load_dataset
from synthmed.metrics import evaluate
from synthmed.metrics.features import DomainExtractor

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def gaussian_blur(images: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    radius = int(3 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    padded = torch.nn.functional.pad(images, (radius,) * 4, mode="replicate")
    out = torch.nn.functional.conv2d(padded, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default="domain,radiomics,inception")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "benchmarks" / "walking-skeleton-default")
    parser.add_argument("--bootstrap", type=int, default=100)
    args = parser.parse_args()
    if not (args.run / "config.yaml").exists():
        subprocess.run(["synthmed", "train", "--out", str(args.run), "--quiet"], check=True)
    train = load_dataset(None, split="train")
    test = load_dataset(None, split="test").images
    n = len(test)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]
    import synthmed

    sets = {
        "real train": train.images[pick],
        "generator": synthmed.load(args.run).sample(n, seed=1),
        "blurred": gaussian_blur(train.images[pick]),
        "noise": torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1,
    }
    features = [f for f in args.features.split(",") if f]
    RESULTS.mkdir(parents=True, exist_ok=True)
    domain_path = RESULTS / "evaluation_breastmnist_domain.json"
    t0 = time.perf_counter()
    if "domain" in features:
        DomainExtractor(in_channels=1, image_size=28).fit(train, progress=False).save(domain_path)
    fit_seconds = time.perf_counter() - t0
    rows = []
    for label, images in sets.items():
        for feature in features:
            # Inception runs at ~3 images/s on a 2-core CPU: no training set (memorisation) for it here.
            result = evaluate(test, images, train=None if feature == "inception" else train.images,
                              features=(feature,), domain_model=domain_path if feature == "domain" else None,
                              bootstrap=args.bootstrap, progress=False)
            fid = next(m for m in result.metrics if m.name == "fid")
            kid = next(m for m in result.metrics if m.name == "kid")
            prec = next(m for m in result.metrics if m.name == "precision")
            rec = next(m for m in result.metrics if m.name == "recall")
            rows.append({
                "set": label, "extractor": feature, "dim": result.extractors[feature]["dim"],
                "n_real": fid.n_real, "n_fake": fid.n_fake, "fid": fid.value, "fid_interval": fid.interval,
                "kid": kid.value, "kid_std": kid.std, "precision": prec.value, "recall": rec.value,
                "seconds": result.seconds.get("total"),
            })
            print(rows[-1], flush=True)
    order = {}
    for feature in features:
        fids = {r["set"]: r["fid"] for r in rows if r["extractor"] == feature}
        kids = {r["set"]: r["kid"] for r in rows if r["extractor"] == feature}
        order[feature] = {
            "fid_order_holds": fids["real train"] < fids["generator"] < min(fids["blurred"], fids["noise"]),
            "kid_order_holds": kids["real train"] < kids["generator"] < min(kids["blurred"], kids["noise"]),
        }
    doc = {
        "benchmark": "evaluation/breastmnist_order",
        "command": "python benchmarks/evaluation_table.py --features " + args.features,
        "reference": {"source": "breastmnist (embedded)", "split": "test", "n": n},
        "generator_run": str(args.run.relative_to(ROOT)) if args.run.is_relative_to(ROOT) else str(args.run),
        "domain_fit_seconds": round(fit_seconds, 1),
        "rows": rows,
        "order": order,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (RESULTS / "evaluation_breastmnist.json").write_text(json.dumps(doc, indent=1))
    print("\n| compared with the test set | " + " | ".join(f"FID {f}" for f in features) + " | "
          + " | ".join(f"KID {f}" for f in features) + " |")
    print("|---" * (1 + 2 * len(features)) + "|")
    for label in sets:
        cells = []
        for key in ("fid", "kid"):
            for feature in features:
                r = next(r for r in rows if r["set"] == label and r["extractor"] == feature)
                if key == "fid" and r["fid_interval"]:
                    cells.append(f"{r['fid']:.3g} [{r['fid_interval'][0]:.3g}, {r['fid_interval'][1]:.3g}]")
                else:
                    cells.append(f"{r[key]:.3g}" + (f" +- {r['kid_std']:.2g}" if key == "kid" else ""))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(json.dumps(order, indent=1))


if __name__ == "__main__":
    main()
