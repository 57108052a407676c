"""The runs dashboard (synthmed.web.runs): runs and evaluation reports found under the root, their details, loss
series equal to losses.csv, pictures served only by id from inside the root, broken runs listed with an error.

One tiny run (4 steps, 8-channel networks, 16-d latent) is trained once for the module; the rest of the root is
written by hand: a broken config, unreadable metrics, a report of `synthmed evaluate`, links leading outside.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("fastapi", reason="the web app needs synthmed[web] (pip install '.[dev]')")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import synthmed  # noqa: E402
from synthmed.web.app import WebSettings, create_app  # noqa: E402

if TYPE_CHECKING:  # the test client's responses (httpx2, which the dev extras install; httpx may be absent)
    from httpx2 import Response
from synthmed.web.runs import MAX_SERIES_POINTS, downsample, read_loss_series  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TOKEN = "organiser-token-for-the-runs-tests-0123456789"
SECRET_PNG_COLOUR = (255, 0, 0)


def png_file(path: Path, colour: tuple[int, int, int] = (10, 20, 30), size: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def run_id(name: str) -> str:
    return hashlib.sha256(f"run:{name}".encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("web-runs")
    root = base / "runs"
    trained = synthmed.train(out=root / "a", steps=4, g_channels=8, d_channels=8, latent_dim=16, batch_size=16,
                             progress=False, sample_every=2, checkpoint_every=1000, device="cpu").run_dir
    assert sorted(p.name for p in (trained / "samples").glob("*.png")) == ["step_00000002.png", "step_00000004.png"]
    assert (trained / "losses.csv").is_file()

    (root / "broken").mkdir()
    (root / "broken" / "config.yaml").write_text("recipe: [unconditional\n")  # unclosed flow sequence
    (root / "bad-metrics").mkdir()
    (root / "bad-metrics" / "config.yaml").write_text("recipe: acgan\ntrain:\n  steps: 10\n")
    (root / "bad-metrics" / "metrics.json").write_text('{"training": {"step": 3,')
    (root / "nan-metrics").mkdir()
    (root / "nan-metrics" / "config.yaml").write_text("recipe: unconditional\n")
    (root / "nan-metrics" / "metrics.json").write_text('{"training": {"step": 7, "final_losses": {"loss_d": NaN}}}')
    (root / ".hidden" / "run").mkdir(parents=True)
    (root / ".hidden" / "run" / "config.yaml").write_text("recipe: unconditional\n")

    # Outside the root: a run, and a picture that links inside the root point at.
    outside = base / "outside"
    (outside / "run").mkdir(parents=True)
    (outside / "run" / "config.yaml").write_text("recipe: unconditional\n")
    secret = png_file(outside / "secret.png", SECRET_PNG_COLOUR)
    png_file(outside / "run" / "samples" / "step_00000001.png", SECRET_PNG_COLOUR)
    (root / "linked-run").symlink_to(outside / "run", target_is_directory=True)
    (trained / "samples" / "step_00000099.png").symlink_to(secret)
    (trained / "explore.png").symlink_to(secret)

    report = root / "eval-a"
    report.mkdir()
    (report / "metrics.json").write_text(json.dumps({
        "sets": {"real": {"source": "breastmnist", "n": 8, "split": "test"},
                 "fake": {"source": "runs/a", "n": 8, "note": "8 samples of step 4, seed 0"}},
        "extractors": {"domain": {"name": "domain", "dim": 256}},
        "metrics": [{"name": "fid", "value": 1.5, "extractor": "domain", "n_real": 8, "n_fake": 8,
                     "interval": [1.0, 2.0], "std": None, "note": ""},
                    {"name": "kid", "value": 0.25, "extractor": "domain", "n_real": 8, "n_fake": 8,
                     "interval": None, "std": 0.125, "note": ""}],
        "memorisation": {"domain": {"copy_fraction": 0.5, "closest_pairs": [{"fake": 1, "train": 2}]}},
        "warnings": ["few samples"],
    }))
    png_file(report / "real_grid.png", (1, 2, 3))
    (report / "report.md").write_text("# synthmed evaluation\n")
    return {"root": root, "run": trained, "report": report, "secret": secret, "base": base}


@pytest.fixture(scope="module")
def client(layout: dict[str, Path]) -> TestClient:
    settings = WebSettings(root=layout["root"], database=layout["base"] / "web.sqlite3", organiser_token=TOKEN)
    return TestClient(create_app(settings), base_url="http://127.0.0.1", headers={"X-Synthmed-Token": TOKEN})


def listed(client: TestClient) -> dict[str, dict]:
    response = client.get("/api/runs")
    assert response.status_code == 200
    return {row["name"]: row for row in response.json()}


def test_runs_are_listed_with_their_recipe_steps_and_samples(client: TestClient) -> None:
    runs = listed(client)
    assert sorted(runs) == ["a", "bad-metrics", "broken", "nan-metrics"]  # no hidden, no linked folder
    a = runs["a"]
    assert a["id"] == run_id("a")
    assert (a["recipe"], a["data_source"], a["steps_done"], a["steps_planned"]) == ("unconditional", "breastmnist",
                                                                                  4, 4)
    assert a["has_samples"] is True and a["error"] is None and a["stopped_because"] == "steps"
    assert runs["nan-metrics"]["steps_done"] == 7 and runs["nan-metrics"]["has_samples"] is False


def test_a_broken_config_or_metrics_file_is_listed_with_an_error(client: TestClient) -> None:
    runs = listed(client)
    broken = runs["broken"]
    assert broken["recipe"] is None and broken["error"].startswith("config.yaml cannot be read")
    assert "\n" not in broken["error"]
    assert runs["bad-metrics"]["recipe"] == "acgan" and "metrics.json cannot be read" in runs["bad-metrics"]["error"]
    detail = client.get(f"/api/runs/{broken['id']}")
    assert detail.status_code == 200 and detail.json()["config"] is None and detail.json()["samples"] == []
    nan = client.get(f"/api/runs/{runs['nan-metrics']['id']}").json()  # NaN cannot go out as JSON: null
    assert nan["metrics"]["training"]["final_losses"]["loss_d"] is None


def test_each_sample_grid_is_served_by_id_with_the_files_bytes(client: TestClient, layout: dict[str, Path]) -> None:
    detail = client.get(f"/api/runs/{run_id('a')}").json()
    assert [s["step"] for s in detail["samples"]] == [2, 4]  # the linked step_00000099.png is not indexed
    assert detail["config"]["recipe"] == "unconditional" and detail["config"]["train"]["steps"] == 4
    assert detail["metrics"]["training"]["step"] == 4
    for sample in detail["samples"]:
        response = client.get(f"/api/runs/{run_id('a')}/files/{sample['file_id']}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content == (layout["run"] / "samples" / f"step_{sample['step']:08d}.png").read_bytes()
    images = {image["name"]: image["file_id"] for image in detail["images"]}
    assert "curves.png" in images and "explore.png" not in images  # explore.png links outside
    curves = client.get(f"/api/runs/{run_id('a')}/files/{images['curves.png']}")
    assert curves.content == (layout["run"] / "curves.png").read_bytes()


def test_loss_series_equal_the_csv(client: TestClient, layout: dict[str, Path]) -> None:
    with (layout["run"] / "losses.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    losses = client.get(f"/api/runs/{run_id('a')}").json()["losses"]
    assert [p["name"] for p in losses["phases"]] == ["train"]
    series = {s["name"]: s["points"] for s in losses["phases"][0]["series"]}
    assert sorted(series) == sorted(losses["columns"]) == ["d_fake", "d_real", "loss_d", "loss_g"]
    for name, points in series.items():
        assert points == [[int(r["step"]), float(r[name])] for r in rows], name


def test_long_series_are_thinned_to_the_limit_keeping_values_and_phases(tmp_path: Path) -> None:
    path = tmp_path / "losses.csv"
    lines = ["step,phase,loss_ae,loss_d,note"]
    lines += [f"{s},autoencoder,{s / 4},,x" for s in range(1, 1001)]
    lines += [f"{s},gan,,{'nan' if s == 1500 else s / 2},y" for s in range(1001, 6001)]
    path.write_text("\n".join(lines) + "\n")
    result = read_loss_series(path)
    assert result["columns"] == ["loss_ae", "loss_d"] and result["downsampled"] is True  # "note" is not numeric
    ae, gan = result["phases"]
    assert ae["name"] == "autoencoder" and [s["name"] for s in ae["series"]] == ["loss_ae"]
    assert ae["series"][0]["points"] == [[s, s / 4] for s in range(1, 1001)]  # 1,000 points: kept whole
    loss_d = gan["series"][0]
    assert (loss_d["name"], loss_d["total"], loss_d["non_finite"]) == ("loss_d", 4999, 1)
    points = loss_d["points"]
    assert len(points) == MAX_SERIES_POINTS and points[0] == [1001, 500.5] and points[-1] == [6000, 3000.0]
    assert all(value == step / 2 for step, value in points)
    assert all(a[0] < b[0] for a, b in zip(points, points[1:], strict=False))
    assert downsample([[i, i] for i in range(5)], 3) == [[0, 0], [2, 2], [4, 4]]


def test_unknown_and_malformed_ids_are_one_line_404s(client: TestClient) -> None:
    a = run_id("a")
    for path in ("/api/runs/000000000000", "/api/runs/not-an-id!", f"/api/runs/{a}/files/0000000000000000",
                 f"/api/runs/{a}/files/curves.png", "/api/runs/000000000000/files/0000000000000000",
                 "/api/runs/reports/000000000000", f"/api/runs/reports/{a}"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["detail"] and "\n" not in response.json()["detail"]


def served_after_swap_for_link(client: TestClient, run: Path, target: Path) -> Response:
    """What run a's ``extra.png`` is served as once, after the index listed it, it is replaced by a link to
    ``target``."""
    extra = png_file(run / "extra.png")
    try:
        images = {i["name"]: i["file_id"] for i in client.get(f"/api/runs/{run_id('a')}").json()["images"]}
        extra.unlink()
        extra.symlink_to(target)
        return client.get(f"/api/runs/{run_id('a')}/files/{images['extra.png']}")
    finally:
        extra.unlink(missing_ok=True)


def test_links_leading_outside_the_root_are_neither_listed_nor_served(client: TestClient,
                                                                       layout: dict[str, Path]) -> None:
    runs = listed(client)
    assert "linked-run" not in runs and run_id("linked-run") not in {r["id"] for r in runs.values()}
    assert client.get(f"/api/runs/{run_id('linked-run')}").status_code == 404
    # A listed picture swapped for a link after the index was built: its real path is checked when served.
    response = served_after_swap_for_link(client, layout["run"], layout["secret"])
    assert response.status_code == 404
    assert response.content != layout["secret"].read_bytes()


def test_a_listed_picture_swapped_for_a_link_to_another_kind_of_file_is_a_404(client: TestClient,
                                                                           layout: dict[str, Path]) -> None:
    data = layout["root"] / "real.npz"  # inside the root, but not a picture
    data.write_bytes(b"PK\x03\x04 not an image")
    try:
        response = served_after_swap_for_link(client, layout["run"], data)
    finally:
        data.unlink()
    assert response.status_code == 404
    assert response.json() == {"detail": "no such file"}


def test_an_evaluation_report_is_listed_and_linked_to_the_run_it_evaluated(client: TestClient,
                                                                           layout: dict[str, Path]) -> None:
    reports = client.get("/api/runs/reports").json()
    assert [r["name"] for r in reports] == ["eval-a"]
    report = reports[0]
    assert (report["run_id"], report["run_name"], report["fake_source"]) == (run_id("a"), "a", "runs/a")
    assert [(m["name"], m["extractor"], m["value"]) for m in report["headline"]] == [("fid", "domain", 1.5),
                                                                                   ("kid", "domain", 0.25)]
    assert report["headline"][0]["interval"] == [1.0, 2.0] and report["headline"][1]["std"] == 0.125
    run = listed(client)["a"]
    assert run["headline"] == [{"name": "FID (domain, report)", "value": 1.5}] and run["reports"] == [report["id"]]
    detail = client.get(f"/api/runs/{run_id('a')}").json()
    assert [e["id"] for e in detail["evaluations"]] == [report["id"]]
    picture = report["files"][0]
    assert picture["name"] == "real_grid.png"
    served = client.get(f"/api/runs/reports/{report['id']}/files/{picture['file_id']}")
    assert served.status_code == 200 and served.content == (layout["report"] / "real_grid.png").read_bytes()
    full = client.get(f"/api/runs/reports/{report['id']}").json()
    assert full["memorisation"] == {"domain": {"copy_fraction": 0.5}}  # the pairs' indices stay out
    assert full["warnings"] == ["few samples"] and full["report_md"] == "# synthmed evaluation\n"


def test_a_new_run_appears_at_the_next_list(client: TestClient, layout: dict[str, Path]) -> None:
    late = layout["root"] / "later" / "b"
    late.mkdir(parents=True)
    try:
        (late / "config.yaml").write_text("recipe: cwgan-gp\ndata_info:\n  source: ph2\n")
        row = listed(client)["later/b"]
        assert (row["recipe"], row["data_source"], row["steps_done"]) == ("cwgan-gp", "ph2", 0)
    finally:
        shutil.rmtree(layout["root"] / "later")
    assert "later/b" not in listed(client)


def test_the_organiser_token_is_required(layout: dict[str, Path], client: TestClient) -> None:
    anonymous = TestClient(client.app, base_url="http://127.0.0.1")
    for path in ("/api/runs", "/api/runs/reports", f"/api/runs/{run_id('a')}",
                 f"/api/runs/{run_id('a')}/files/0000000000000000"):
        response = anonymous.get(path)
        assert response.status_code == 403, path
    assert anonymous.get("/").status_code == 403
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="runs-table"' in page.text and "/static/runs.js" in page.text and TOKEN in page.text


def test_the_page_scripts_are_served(client: TestClient) -> None:
    for name in ("runs.js", "runs.css"):
        assert client.get(f"/static/{name}").status_code == 200
    script = client.get("/static/runs.js").text
    for element in ("loss-chart", "sample-timeline", "sample-grid", "run-row"):
        assert element in script

