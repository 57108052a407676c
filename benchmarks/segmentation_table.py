"""The segmentation study's table: unet vs segan vs pix2pix-seg on LGG, PH2 and DRIVE, over training seeds.

    python benchmarks/segmentation_table.py EVAL_DIR [--runs RUNS_DIR] [--out benchmarks/results/segmentation]

``EVAL_DIR`` holds one ``synthmed segment`` output folder per run, named ``<data>-<method>-s<seed>`` (e.g.
``lgg-segan-s1``), each with its ``metrics.json`` (the run's test split or its held-out test folder, scored with
the checkpoint selected on validation Dice). For every data set and method the table gives, over the seeds, the
mean and a 95% t-interval of: the data set's headline Dice (LGG: per patient, the volume of each patient's slices
pooled, as Buda et al. 2019 report it; PH2: per image = per lesion; DRIVE: pooled over every pixel inside the
field of view of the 20 test images, as DRIVE papers report it), the per-image Dice, the HD95 (px) averaged over
the images whose truth shows a lesion, and the share of those images with no prediction at all (HD95 undefined).
Each adversarial method is compared with the U-Net of the same seed: the mean paired difference with a bootstrap
interval over seeds and a paired t-test (``metrics.stats.paired_comparison``). Writes ``table.json`` and
``table.md``; with ``--runs`` (the training run folders, same names) also ``val_curves.png``: the validation Dice
each run recorded during training, per data set and method.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from _common import mean_and_interval
from synthmed.metrics.stats import mean_interval, paired_comparison

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("unet", "segan", "pix2pix-seg")
#: Data set -> (its headline Dice, as the literature reports it, and how it is described).
HEADLINE = {
    "lgg": ("per_patient", "Dice per patient (slices pooled per patient)"),
    "ph2": ("per_image", "Dice per lesion image"),
    "drive": ("pooled", "Dice pooled over all FOV pixels"),
}
NAME = re.compile(r"^(?P<data>[a-z0-9]+)-(?P<method>.+)-s(?P<seed>\d+)$")


def read_runs(eval_dir: Path) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """(data, method) -> seed -> the numbers of that run's metrics.json (foreground class 1)."""
    runs: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for path in sorted(eval_dir.glob("*/metrics.json")):
        match = NAME.match(path.parent.name)
        if not match or match["method"] not in METHODS:
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        dice = metrics["dice"]["1"]
        runs.setdefault((match["data"], match["method"]), {})[int(match["seed"])] = {
            "per_patient": dice["per_patient"], "per_image": dice["per_image"], "pooled": dice["pooled"],
            "per_patient_interval": dice.get("per_patient_interval"),
            **_lesion_hd95(path.parent / "metrics.csv"),
            "step": metrics.get("step"), "checkpoint": metrics.get("checkpoint"), "counts": metrics.get("counts"),
        }
    return runs


def _lesion_hd95(csv_path: Path) -> dict[str, float | None]:
    """Mean HD95 (px) over the images whose truth has foreground, and the share of those with no prediction at
    all (their HD95 is undefined). Images empty in both truth and prediction (HD95 0 by convention, most LGG
    slices) are left out, so the mean describes lesion boundaries, not the empty slices."""
    import csv
    import math

    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["class"] == "1" and float(r["truth_pixels"]) > 0]
    distances = [float(r["hd95_px"]) for r in rows if r["hd95_px"] not in ("", "nan")]
    distances = [d for d in distances if math.isfinite(d)]
    return {"hd95_px": sum(distances) / len(distances) if distances else None,
            "missed": 1.0 - len(distances) / len(rows) if rows else None}


def summarise(runs: dict[tuple[str, str], dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for data in HEADLINE:
        key, described = HEADLINE[data]
        baseline = runs.get((data, "unet"), {})
        for method in METHODS:
            seeds = runs.get((data, method))
            if not seeds:
                continue
            order = sorted(seeds)
            row: dict[str, Any] = {"data": data, "method": method, "headline": described, "seeds": order,
                                   "test_counts": seeds[order[0]]["counts"]}
            for name, metric in (("headline_dice", key), ("per_image", "per_image"), ("hd95_px", "hd95_px"),
                                 ("missed", "missed")):
                values = [seeds[s][metric] for s in order if seeds[s][metric] is not None]
                row[name] = mean_interval(values) if values else None
            row["per_seed"] = {s: {"headline_dice": seeds[s][key], "best_step": seeds[s]["step"]} for s in order}
            shared = [s for s in order if s in baseline]
            if method != "unet" and len(shared) >= 2:
                row["vs_unet"] = paired_comparison([seeds[s][key] for s in shared],
                                                   [baseline[s][key] for s in shared])
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| data | method | headline Dice (test) | Dice per image | HD95 px (lesion images) | lesions missed |"
             " vs U-Net (same seeds) | seeds |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        versus = "-"
        if "vs_unet" in row:
            c = row["vs_unet"]
            p = "n/a" if c["p_value"] is None else f"{c['p_value']:.2f}"
            versus = f"{c['mean_difference']:+.3f} [{c['interval'][0]:+.3f}, {c['interval'][1]:+.3f}], p={p}"
        headline = mean_and_interval(row["headline_dice"])
        lines.append(f"| {row['data']} ({row['headline']}) | {row['method']} | {headline} | "
                     f"{mean_and_interval(row['per_image'])} | {mean_and_interval(row['hd95_px'], 2)} | "
                     f"{mean_and_interval(row['missed'], 3)} | {versus} | "
                     f"{len(row['seeds'])} |")
    return "\n".join(lines) + "\n"


def plot_validation_curves(runs_dir: Path, out: Path) -> Path | None:
    """Validation Dice against training step (``eval.csv`` of each run), one panel per data set, one colour per
    method, one thin line per seed."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, dict[str, list[tuple[list[int], list[float]]]]] = {}
    for path in sorted(runs_dir.glob("*/eval.csv")):
        match = NAME.match(path.parent.name)
        if not match or match["method"] not in METHODS:
            continue
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        steps, values = [int(r["step"]) for r in rows], [float(r["val_dice"]) for r in rows]
        curves.setdefault(match["data"], {}).setdefault(match["method"], []).append((steps, values))
    if not curves:
        return None
    names = [d for d in HEADLINE if d in curves]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    colours = dict(zip(METHODS, ("tab:blue", "tab:red", "tab:green"), strict=True))
    for ax, data in zip(axes[0], names, strict=True):
        for method, lines in curves[data].items():
            for i, (steps, values) in enumerate(lines):
                ax.plot(steps, values, color=colours[method], lw=1.2, alpha=0.8, label=method if i == 0 else None)
        seeds = max(len(lines) for lines in curves[data].values())
        ax.set_title(f"{data}: validation Dice, {seeds} seed{'s' if seeds > 1 else ''} per method")
        ax.set_xlabel("training step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0][0].set_ylabel("Dice, pooled over the val split")
    fig.tight_layout()
    path = out / "val_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir", type=Path, help="folder of `synthmed segment` outputs named DATA-METHOD-sSEED")
    parser.add_argument("--runs", type=Path, default=None, help="the training runs (for the validation curves)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "segmentation")
    args = parser.parse_args()
    rows = summarise(read_runs(args.eval_dir))
    if not rows:
        raise SystemExit(f"{args.eval_dir}: no DATA-METHOD-sSEED/metrics.json found")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps({"rows": rows, "interval": "95% t-interval over seeds; "
                                                     "vs_unet: paired bootstrap over seeds + paired t-test"},
                                                    indent=1), encoding="utf-8")
    table = markdown(rows)
    (args.out / "table.md").write_text(table, encoding="utf-8")
    print(table)
    if args.runs is not None:
        print(plot_validation_curves(args.runs, args.out))


if __name__ == "__main__":
    main()
