"""Break the wiring on purpose and check that the test suite notices (issue 17's acceptance check).

Each mutation edits one place of a scratch copy of this checkout (the tracked and untracked, not ignored files),
runs the whole default test suite there, and records which tests failed. A mutation that no test catches is a
hole in the suite. Writes ``benchmarks/results/wiring_mutations.json``.

    python benchmarks/wiring_mutations.py                 # every mutation (about 4 min each on 2 cores)
    python benchmarks/wiring_mutations.py --only ttur-ignored --pytest-args "tests/test_recipe_wiring.py"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str


MUTATIONS = [
    Mutation("rng-state-not-restored", "drop torch.set_rng_state in resume",
             "src/synthmed/training/trainer.py",
             'torch.set_rng_state(extra[f"rng/cpu{suffix}"])', "pass"),
    Mutation("gp-epsilon-per-batch", "one gradient-penalty epsilon per batch instead of per sample",
             "src/synthmed/losses.py",
             "epsilon = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)",
             "epsilon = torch.rand(1, device=real.device, dtype=real.dtype).expand(real.shape[0])"),
    Mutation("label-smoothing-ignored", "label smoothing ignored by the recipe",
             "src/synthmed/recipes/unconditional.py",
             "real: torch.Tensor | float = 1.0 - cfg.label_smoothing", "real: torch.Tensor | float = 1.0"),
    Mutation("gp-weight-ignored", "gradient-penalty weight (lambda) ignored by the recipe",
             "src/synthmed/recipes/unconditional.py",
             "loss_d = loss_d + cfg.gp_weight * gp", "loss_d = loss_d + 10.0 * gp"),
    Mutation("ttur-ignored", "TTUR's discriminator learning rate ignored",
             "src/synthmed/recipes/unconditional.py",
             "ttur_lr_d = 4 * float(lr_g) if ttur else preset.lr_d", "ttur_lr_d = preset.lr_d"),
    Mutation("ema-swapped", "EMA weights swapped with the live generator's (the trainer averages into G)",
             "src/synthmed/training/trainer.py",
             "update_ema(shadow, source, ", "update_ema(source, shadow, "),
    Mutation("sampling-uses-live-generator", "sampling uses the live generator instead of the EMA copy",
             "src/synthmed/recipes/unconditional.py",
             'return self.networks["G_ema"] if "G_ema" in self.networks else self.networks["G"]',
             'return self.networks["G"]'),
    Mutation("gradients-summed", "StepContext.optimize sums gradients across processes instead of averaging",
             "src/synthmed/training/distributed.py",
             "flat /= world_size", "pass"),
]


def scratch_copy(target: Path) -> None:
    """Copy the files git would commit (tracked + untracked, not ignored) to ``target``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    if target.exists():
        shutil.rmtree(target)
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def check_applies(mutation: Mutation) -> None:
    """Before anything runs: each mutation's text is in its file exactly once (the code may have moved)."""
    if (ROOT / mutation.path).read_text().count(mutation.old) != 1:
        raise SystemExit(f"{mutation.path}: the text to mutate for {mutation.name!r} is not there exactly once")


def run_mutation(mutation: Mutation, scratch: Path, pytest_args: list[str]) -> dict[str, object]:
    copy = scratch / mutation.name
    scratch_copy(copy)
    path = copy / mutation.path
    path.write_text(path.read_text().replace(mutation.old, mutation.new))
    # The copy's src first, for pytest and for every subprocess it starts (CLI runs, torchrun, spawned workers).
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *pytest_args],
                          cwd=copy, env=env, capture_output=True, text=True)
    failed = sorted(set(re.findall(r"^FAILED (\S+)", done.stdout, flags=re.M)))
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    shutil.rmtree(copy)
    return {"mutation": mutation.name, "change": mutation.what, "file": mutation.path, "failed_tests": failed,
            "caught": bool(failed), "summary": summary, "seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="mutation names (default: all)")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, e.g. a test file")
    parser.add_argument("--scratch", default="/tmp/synthmed-mutations")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "wiring_mutations.json"))
    parser.add_argument("--merge", action="store_true", help="keep the other mutations' results already in --out")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    for mutation in chosen:
        check_applies(mutation)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    out = Path(args.out)
    results = json.loads(out.read_text())["mutations"] if args.merge and out.exists() else []
    for mutation in chosen:
        result = run_mutation(mutation, Path(args.scratch), args.pytest_args.split())
        result.update(commit=commit, pytest_args=args.pytest_args)
        print(f"{mutation.name}: {len(result['failed_tests'])} failed ({result['seconds']} s) "
              f"{result['summary']}", flush=True)
        results = [r for r in results if r["mutation"] != mutation.name] + [result]
        out.write_text(json.dumps({"mutations": results}, indent=1) + "\n")  # after each: hours of work
    if not all(r["caught"] for r in results):
        raise SystemExit("some mutations were not caught: " + ", ".join(r["mutation"] for r in results
                                                                         if not r["caught"]))


if __name__ == "__main__":
    main()
