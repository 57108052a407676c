"""Screenshots of every page of `synthmed serve` for docs/web.md, taken in headless Chromium through Playwright.

Builds a demo runs folder (copies of the given runs, their last checkpoint only, and docs/evaluation-example as an
evaluation report), starts the app on loopback, makes a 10 + 10 Turing test (real: BreastMNIST test split;
synthetic: the first run) answered by **simulated readers** (a script answering at random with a fixed seed, not
people: the results page shows how results look, not how hard the images are), and visits each page.

    python benchmarks/web_screenshots.py --runs runs/benchmarks/walking-skeleton-default PATH/TO/acgan-run \\
        --out docs/images/web
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from _common import ROOT

sys.path.insert(0, str(ROOT / "tests"))
CHROMIUM_FLAGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def copy_run(run: Path, into: Path) -> Path:
    """The run without all but its last checkpoint (the explorer loads the latest)."""
    target = into / run.name
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("checkpoints"))
    checkpoints = sorted((run / "checkpoints").glob("step_*.json"))
    if checkpoints:
        (target / "checkpoints").mkdir()
        for path in (checkpoints[-1], checkpoints[-1].with_suffix(".safetensors")):
            shutil.copy2(path, target / "checkpoints" / path.name)
    return target


def call(base_url: str, method: str, path: str, token: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(base_url + path, method=method, headers={
        "X-Synthmed-Token": token, "Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def simulated_readers(base_url: str, study: dict, seed: int, skip: str) -> None:
    """Each simulated reader answers every image at random (confidence at random too); reader ``skip`` stops at 3."""
    rng = random.Random(seed)
    for reader in study["readers"]:
        token = reader["token"]
        state = call(base_url, "GET", f"/api/read/{token}/state", token)
        while not state["done"] and not (reader["name"] == skip and state["position"] >= 3):
            body = {"position": state["position"], "answer": rng.choice(["real", "synthetic"]),
                    "confidence": rng.randint(1, 5), "response_ms": rng.randint(1500, 9000)}
            state = call(base_url, "POST", f"/api/read/{token}/answer", token, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="Runs to show (the first is sampled "
                        "for the study; a conditional one is shown in the explorer when given).")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "web")
    parser.add_argument("--ganlab-steps", type=int, default=400)
    args = parser.parse_args()

    from playwright.sync_api import expect, sync_playwright

    from synthmed.web.app import WebSettings
    from webserver import thread_server

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        (root / "benchmarks").mkdir(parents=True)
        runs = [copy_run(run.resolve(), root / "benchmarks") for run in args.runs]
        shutil.copytree(ROOT / "docs" / "evaluation-example", root / "evaluation-example")
        with thread_server(WebSettings(root=root, database=Path(tmp) / "web.sqlite3")) as (base_url, app):
            token = app.state.organiser_token
            study = call(base_url, "POST", "/api/studies", token, {
                "name": "Breast ultrasound, round 1 (simulated readers)", "real": "breastmnist",
                "synthetic": str(runs[0].relative_to(root)), "n_per_class": 10,
                "readers": ["reader A", "reader B", "reader C", "reader D"], "seed": 0})
            simulated_readers(base_url, study, seed=0, skip="reader D")
            reader_d = next(r for r in study["readers"] if r["name"] == "reader D")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
                shoot(page, expect, base_url, token, study, reader_d, runs, args)
                browser.close()
    print(f"screenshots in {args.out}")


def shoot(page, expect, base_url: str, token: str, study: dict, reader: dict, runs: list[Path],  # noqa: ANN001
          args: argparse.Namespace) -> None:
    out = args.out
    page.goto(f"{base_url}/?token={token}")
    expect(page.locator("tr.run-row").first).to_be_visible()
    page.screenshot(path=out / "runs.png")
    page.click(f"tr.run-row >> text={runs[0].name}")
    page.wait_for_selector("#loss-chart[data-points]")
    page.wait_for_selector("#sample-grid[data-step]")
    page.set_viewport_size({"width": 1280, "height": 1280})  # the top of the run: curves and the grid timeline
    page.screenshot(path=out / "run.png")
    page.set_viewport_size({"width": 1280, "height": 860})

    page.goto(f"{base_url}/explore")
    conditional = runs[-1].name if len(runs) > 1 else runs[0].name
    page.select_option("#latent-run", label=next(o for o in page.locator("#latent-run option").all_inner_texts()
                                                 if conditional in o))
    page.locator("#latent-t").focus()
    for _ in range(40):
        page.keyboard.press("ArrowRight")
    page.wait_for_timeout(1500)
    page.screenshot(path=out / "explore.png", full_page=True)

    page.goto(f"{base_url}/read/{reader['token']}")
    page.wait_for_selector('#study-image[data-loaded="true"]')
    page.click("#answer-synthetic")
    page.check('input[name=confidence][value="4"]')
    page.screenshot(path=out / "reader.png", full_page=True)

    page.goto(f"{base_url}/studies#{study['id']}")
    page.wait_for_selector("#pooled-accuracy[data-value]")
    page.wait_for_selector("#calibration-chart[data-points]")
    page.screenshot(path=out / "study-results.png", full_page=True)

    page.goto(f"{base_url}/ganlab")
    page.wait_for_selector("#ganlab-canvas")
    page.click("#ganlab-play")
    counter = page.locator("#ganlab-step-count")
    while int("".join(c for c in counter.inner_text() if c.isdigit()) or 0) < args.ganlab_steps:
        page.wait_for_timeout(200)
    page.click("#ganlab-play")
    page.wait_for_timeout(500)
    page.screenshot(path=out / "ganlab.png", full_page=True)


if __name__ == "__main__":
    main()
