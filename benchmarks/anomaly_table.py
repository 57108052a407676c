"""The anomaly-detection study's table and figures: f-AnoGAN vs AnoGAN on one data set, over training seeds.

    python benchmarks/anomaly_table.py EVAL_DIR [--out benchmarks/results/anomaly] [--images docs/images/anomaly]

``EVAL_DIR`` holds one ``synthmed detect`` output folder per run and method, named ``<data>-<method>-s<seed>``
(e.g. ``lgg-fanogan-s1``), each with its ``metrics.json`` and ``scores.csv`` (the run's test split). For every
method the table gives, per seed and over seeds (mean and a 95% t-interval when there are several), the image-level
AUROC, AUPRC and sensitivity at 95% specificity (tumour slice vs slice without tumour), the pixel-level AUPRC and
best Dice (pooled over every foreground pixel of the test slices; slices without tumour contribute negatives only),
and, where a threshold was calibrated on the validation split (not one given by hand), sensitivity and
specificity at it. Each image AUROC
also gets a 95% bootstrap interval over the test patients (slices of one patient resampled together: 2,000
resamples), the uncertainty a single seed's figure carries. Writes ``table.json`` and ``table.md``; with
``--images`` also ``roc.png`` (ROC curves) and ``scores.png`` (score histograms, no tumour vs tumour).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from _common import mean_and_interval
from synthmed.metrics.anomaly import image_metrics
from synthmed.metrics.stats import mean_interval

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^(?P<data>[a-z0-9]+)-(?P<method>[a-z0-9-]+)-s(?P<seed>\d+)$")
METRICS = (
    ("image_auroc", "image AUROC"), ("image_auprc", "image AUPRC"), ("sens_at_95_spec", "sens. @ 95% spec."),
    ("pixel_auprc", "pixel AUPRC"), ("pixel_best_dice", "pixel best Dice"),
    ("sensitivity_at_threshold", "sens. at val threshold"), ("specificity_at_threshold", "spec. at val threshold"),
)
BOOTSTRAP = 2000


def read_scores(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, labels, patients) of a detect scores.csv."""
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    scores = np.array([float(r["score"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    patients = np.array([r.get("patient") or r["name"] for r in rows])
    return scores, labels, patients


def patient_bootstrap_auroc(scores: np.ndarray, labels: np.ndarray, patients: np.ndarray,
                            seed: int = 0) -> list[float] | None:
    """95% interval of the image AUROC, resampling test patients (with all their slices) with replacement."""
    rng = np.random.default_rng(seed)
    names = np.unique(patients)
    rows = [np.flatnonzero(patients == p) for p in names]
    values = []
    for _ in range(BOOTSTRAP):
        picked = np.concatenate([rows[i] for i in rng.integers(0, len(rows), len(rows))])
        if labels[picked].min() == labels[picked].max():
            continue
        values.append(image_metrics(scores[picked], labels[picked])["auroc"])
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else None


def read_runs(eval_dir: Path) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """(data, method) -> seed -> that evaluation's figures."""
    runs: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for path in sorted(eval_dir.glob("*/metrics.json")):
        match = NAME.match(path.parent.name)
        if not match:
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        image, pixel = metrics["image"], metrics["pixel"]
        # A threshold given by hand (e.g. a dummy one where calibration was skipped) says nothing about the model.
        calibrated = (metrics.get("threshold") or {}).get("source") != "given"
        at = (image.get("at_threshold") or {}) if calibrated else {}
        scores, labels, patients = read_scores(path.parent / "scores.csv")
        runs.setdefault((match["data"], match["method"]), {})[int(match["seed"])] = {
            "image_auroc": image["auroc"], "image_auprc": image["auprc"],
            "sens_at_95_spec": image["sensitivity_at_95_specificity"],
            "pixel_auprc": pixel["auprc"], "pixel_best_dice": pixel["best_dice"],
            "sensitivity_at_threshold": at.get("sensitivity"), "specificity_at_threshold": at.get("specificity"),
            "image_auroc_patient_bootstrap": patient_bootstrap_auroc(scores, labels, patients),
            "counts": {"images": int(labels.size), "tumour": int(labels.sum()),
                       "patients": int(np.unique(patients).size), "pixels": pixel["n_pixels"]},
            "threshold": metrics.get("threshold"), "settings": metrics.get("settings"),
            "checkpoint": metrics.get("checkpoint"),
        }
    return runs


def summarise(runs: dict[tuple[str, str], dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for (data, method), seeds in sorted(runs.items()):
        row: dict[str, Any] = {"data": data, "method": method, "seeds": sorted(seeds), "per_seed": seeds}
        for key, _ in METRICS:
            values = [s[key] for s in seeds.values() if s[key] is not None]
            row[key] = mean_interval(values) if values else None
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| data | method | seeds | " + " | ".join(label for _, label in METRICS) + " |"
    lines = [head, "|" + "---|" * (3 + len(METRICS))]
    for row in rows:
        cells = [row["data"], row["method"], str(len(row["seeds"]))] + [mean_and_interval(row[k]) for k, _ in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per seed (image AUROC with a 95% bootstrap interval over test patients):", ""]
    for row in rows:
        for seed, values in sorted(row["per_seed"].items()):
            boot = values["image_auroc_patient_bootstrap"]
            interval = f" [{boot[0]:.3f}, {boot[1]:.3f}]" if boot else ""
            lines.append(f"- {row['data']} {row['method']} seed {seed}: AUROC {values['image_auroc']:.3f}{interval}, "
                         f"pixel best Dice {values['pixel_best_dice']:.3f}, {values['counts']['images']} slices "
                         f"({values['counts']['tumour']} with tumour) of {values['counts']['patients']} patients")
    return "\n".join(lines) + "\n"


def _roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    tpr = np.concatenate([[0.0], np.cumsum(hits) / max(hits.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(1 - hits) / max((1 - hits).sum(), 1)])
    return fpr, tpr


def plot(eval_dir: Path, runs: dict[tuple[str, str], dict[int, dict[str, Any]]], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig_roc, ax_roc = plt.subplots(figsize=(4.6, 4.4))
    methods = sorted(runs)
    fig_hist, axes = plt.subplots(1, len(methods), figsize=(4.4 * len(methods), 3.4), squeeze=False)
    for (data, method), ax in zip(methods, axes[0], strict=True):
        for i, (seed, values) in enumerate(sorted(runs[(data, method)].items())):
            scores, labels, _ = read_scores(eval_dir / f"{data}-{method}-s{seed}" / "scores.csv")
            fpr, tpr = _roc(scores, labels)
            ax_roc.plot(fpr, tpr, lw=1.2, label=f"{method} s{seed} (AUROC {values['image_auroc']:.3f})")
            if i == 0:
                bins = np.linspace(scores.min(), scores.max(), 40)
                ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label=f"no tumour ({(labels == 0).sum()})")
                ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label=f"tumour ({labels.sum()})")
                ax.set(title=f"{data} {method}, seed {seed}: test slices", xlabel="anomaly score", ylabel="slices")
                ax.legend(fontsize=8)
    ax_roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax_roc.set(xlabel="1 - specificity", ylabel="sensitivity", title="Tumour slice vs no tumour (test patients)")
    ax_roc.legend(fontsize=7, loc="lower right")
    paths = [out / "roc.png", out / "scores.png"]
    fig_roc.tight_layout()
    fig_roc.savefig(paths[0], dpi=120)
    fig_hist.tight_layout()
    fig_hist.savefig(paths[1], dpi=120)
    plt.close("all")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_dir", type=Path, help="folder of synthmed detect outputs named <data>-<method>-s<seed>")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "anomaly")
    parser.add_argument("--images", type=Path, default=None, help="folder for roc.png and scores.png")
    args = parser.parse_args()
    runs = read_runs(args.eval_dir)
    if not runs:
        raise SystemExit(f"{args.eval_dir}: no <data>-<method>-s<seed>/metrics.json found")
    rows = summarise(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    (args.out / "table.md").write_text(markdown(rows), encoding="utf-8")
    print(markdown(rows))
    if args.images is not None:
        for path in plot(args.eval_dir, runs, args.images):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
