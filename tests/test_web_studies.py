"""The visual Turing test (synthmed serve): studies from npz files and runs, readers' orders, answers, results."""

from __future__ import annotations

import csv
import io
import shutil
import sqlite3
import struct
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs synthmed[web] (pip install '.[dev]')")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from synthmed.web import study_store  # noqa: E402
from synthmed.web.app import WebSettings, create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

REAL_TEST_IMAGES = 12
SYNTHETIC_IMAGES = 15


def write_sources(root: Path) -> None:
    """real.npz: MedMNIST layout, 16 px grey, bright (150..249), 12 test images; synthetic.npz: 15 RGB 24 px images,
    dark (10..109). Brightness tells a test which kind a served image is, whatever the reader's order."""
    rng = np.random.default_rng(0)
    np.savez(root / "real.npz",
             train_images=rng.integers(150, 250, (4, 16, 16), dtype=np.uint8),
             val_images=rng.integers(150, 250, (2, 16, 16), dtype=np.uint8),
             test_images=rng.integers(150, 250, (REAL_TEST_IMAGES, 16, 16), dtype=np.uint8))
    np.savez(root / "synthetic.npz", images=rng.integers(10, 110, (SYNTHETIC_IMAGES, 24, 24, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("webroot")
    write_sources(folder)
    return folder


@pytest.fixture()
def app(root: Path, tmp_path: Path):  # noqa: ANN201
    return create_app(WebSettings(root=root, database=tmp_path / "web.sqlite3"))


@pytest.fixture()
def client(app) -> TestClient:  # noqa: ANN001
    return TestClient(app, base_url="http://127.0.0.1")


def organiser(app) -> dict[str, str]:  # noqa: ANN001
    return {"X-Synthmed-Token": app.state.organiser_token}


def make_study(client: TestClient, app, **fields) -> dict:  # noqa: ANN001
    body = {"name": "round 1", "real": "real.npz", "synthetic": "synthetic.npz", "n_per_class": 10,
            "readers": ["ann", "bob"], "seed": 3, **fields}
    response = client.post("/api/studies", json=body, headers=organiser(app))
    assert response.status_code == 201, response.text
    return response.json()


def looks_real(png: bytes) -> bool:
    return float(np.asarray(Image.open(io.BytesIO(png))).mean()) > 128


def png_chunks(png: bytes) -> list[str]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(png):
        length, kind = struct.unpack(">I4s", png[offset:offset + 8])
        chunks.append(kind.decode("ascii"))
        offset += 12 + length
    return chunks


def answer(client: TestClient, token: str, position: int, said: str, confidence: int = 3, **extra):  # noqa: ANN201
    return client.post(f"/api/read/{token}/answer", headers={"X-Synthmed-Token": token},
                       json={"position": position, "answer": said, "confidence": confidence, "response_ms": 1200,
                             **extra})


def one_line_error(response, status: int) -> str:  # noqa: ANN001
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and detail
    return detail


def test_a_study_holds_n_per_class_images_of_each_kind_in_one_size_and_mode_without_metadata(client, app,
                                                                                            tmp_path) -> None:
    study = make_study(client, app)
    assert study["n_items"] == 20 and study["image_size"] == 16 and study["image_mode"] == "L"
    assert sorted(item["truth"] for item in study["items"]).count("real") == 10
    assert "resized from 24x24 to 16x16" in study["notes"] and "converted from 3 channel(s) to L" in study["notes"]
    assert "10 of 12 images" in study["real_source"] and "split test" in study["real_source"]
    assert "10 of 15 images" in study["synthetic_source"] and "split all" in study["synthetic_source"]
    organiser_pngs = {}
    for item in study["items"]:
        response = client.get(f"/api/studies/{study['id']}/items/{item['id']}.png", headers=organiser(app))
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content))
        assert (image.mode, image.size) == ("L", (16, 16))
        chunks = png_chunks(response.content)  # no tEXt, iTXt, zTXt, tIME, pHYs: nothing but pixels
        assert chunks[0] == "IHDR" and chunks[-1] == "IEND" and set(chunks) == {"IHDR", "IDAT", "IEND"}
        assert looks_real(response.content) == (item["truth"] == "real")  # the stored truth is the source's
        organiser_pngs[item["id"]] = response.content
    token = study["readers"][0]["token"]
    served = [client.get(f"/api/read/{token}/image/{p}").content for p in range(20)]
    assert sorted(served) == sorted(organiser_pngs.values())  # every item once, byte for byte
    with sqlite3.connect(tmp_path / "web.sqlite3") as db:
        assert db.execute("SELECT truth, COUNT(*) FROM items GROUP BY truth ORDER BY truth").fetchall() == \
            [("real", 10), ("synthetic", 10)]
        assert db.execute("SELECT COUNT(*) FROM reader_items").fetchone()[0] == 40


def test_every_reader_has_their_own_order_which_never_changes_and_cannot_be_computed(client, app, root,
                                                                                      tmp_path) -> None:
    study = make_study(client, app, readers=3)
    assert [r["name"] for r in study["readers"]] == ["reader 1", "reader 2", "reader 3"]
    tokens = [r["token"] for r in study["readers"]]
    orders = [[client.get(f"/api/read/{t}/image/{p}").content for p in range(20)] for t in tokens]
    # Each order is one of 20! ~ 2.4e18 permutations drawn from 128 fresh random bits, so two orders coincide with
    # probability about 1 / 20! ~ 4e-19 per pair: every "differ" below fails by chance far less than once in 1e17.
    assert orders[0] != orders[1] != orders[2] != orders[0]
    assert all(sorted(order) == sorted(orders[0]) for order in orders)
    restarted = create_app(WebSettings(root=root, database=tmp_path / "web.sqlite3"))  # the server restarted
    again_client = TestClient(restarted, base_url="http://127.0.0.1")
    assert [again_client.get(f"/api/read/{tokens[0]}/image/{p}").content for p in range(20)] == orders[0]
    again = make_study(client, app, readers=3)  # the same seed and sources: the same images, other orders
    with sqlite3.connect(tmp_path / "web.sqlite3") as db:
        def order_of(study_id: str, ordinal: int) -> list[tuple[str, int]]:
            return db.execute("SELECT i.truth, i.source_index FROM reader_items ri JOIN readers r ON r.id = "
                              "ri.reader_id JOIN items i ON i.id = ri.item_id WHERE r.study_id = ? AND r.ordinal = ? "
                              "ORDER BY ri.position", (study_id, ordinal)).fetchall()
        items = db.execute("SELECT truth, source_index FROM items WHERE study_id = ? ORDER BY ordinal",
                           (study["id"],)).fetchall()
        for ordinal in range(3):
            assert sorted(order_of(study["id"], ordinal)) == sorted(items)  # the seed still picks the images
            assert sorted(order_of(again["id"], ordinal)) == sorted(items)
            assert order_of(study["id"], ordinal) != order_of(again["id"], ordinal)
            # Nor is it what a reader could compute from the seed (3) and their number, as orders once were.
            computed = [items[int(k)] for k in np.random.default_rng([3, 1000 + ordinal]).permutation(20)]
            assert order_of(study["id"], ordinal) != computed
    added = client.post(f"/api/studies/{study['id']}/readers", json={"readers": 2}, headers=organiser(app))
    assert added.status_code == 201 and [r["name"] for r in added.json()["readers"]] == ["reader 4", "reader 5"]
    assert added.json()["readers"][0]["link"] == f"http://127.0.0.1/read/{added.json()['readers'][0]['token']}"
    clash = client.post(f"/api/studies/{study['id']}/readers", json={"readers": ["reader 2"]}, headers=organiser(app))
    assert "reader 2" in one_line_error(clash, 409)


def test_every_image_of_a_study_is_the_same_number_of_bytes(client, app) -> None:
    """A reader sees an image's Content-Length before its pixels; compressed, real and synthetic images differ in
    length (the length alone once told them apart with AUC 0.69), so a study's PNGs are stored uncompressed."""
    study = make_study(client, app)
    token = study["readers"][0]["token"]
    lengths = set()
    for position in range(20):
        response = client.get(f"/api/read/{token}/image/{position}")
        assert int(response.headers["content-length"]) == len(response.content)
        lengths.add(len(response.content))
    # 16x16 grey, stored: signature 8 + IHDR 25 + IDAT (12 + zlib header 2 + stored-block header 5
    # + 16 rows x (1 filter byte + 16) + Adler-32 4) + IEND 12 = 8 + 25 + 295 + 12.
    assert lengths == {340}


def test_a_busy_database_is_a_one_line_503_after_a_short_wait(client, app, tmp_path, monkeypatch) -> None:
    study = make_study(client, app)
    token = study["readers"][0]["token"]
    monkeypatch.setattr(study_store, "BUSY_TIMEOUT_MS", 50)
    holder = sqlite3.connect(tmp_path / "web.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        started = time.monotonic()
        busy = [answer(client, token, 0, "real"),
                client.post(f"/api/studies/{study['id']}/readers", json={"readers": 1}, headers=organiser(app)),
                client.post("/api/studies", headers=organiser(app), json={
                    "name": "x", "real": "real.npz", "synthetic": "synthetic.npz", "n_per_class": 2})]
        for response in busy:
            assert one_line_error(response, 503) == "the study database is busy; try again"
            assert response.headers["retry-after"] == "1"
        assert time.monotonic() - started < 10  # three waits of 50 ms, not 30 s each
        assert client.get(f"/api/read/{token}/state").json()["answered"] == 0  # reading goes on (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answer(client, token, 0, "real").status_code == 200  # the lock released: the retry is saved
    assert len(client.get("/api/studies", headers=organiser(app)).json()["studies"]) == 1


def test_colour_real_images_with_grey_synthetic_ones_are_all_shown_in_grey(client, app, root) -> None:
    rng = np.random.default_rng(5)
    colour = rng.integers(150, 250, (12, 16, 16, 3), dtype=np.uint8)
    np.savez(root / "colour_real.npz", images=colour)
    np.savez(root / "grey_synthetic.npz", images=rng.integers(10, 110, (12, 16, 16), dtype=np.uint8))
    study = make_study(client, app, real="colour_real.npz", synthetic="grey_synthetic.npz", real_split="all")
    assert study["image_mode"] == "L"  # not the grey images repeated to R = G = B beside coloured real ones
    assert "real images are in colour and synthetic ones grey: both are shown in grey (L)" in study["notes"]
    token = study["readers"][0]["token"]
    for position in range(20):
        assert Image.open(io.BytesIO(client.get(f"/api/read/{token}/image/{position}").content)).mode == "L"
    for item in study["items"]:
        if item["truth"] == "real":  # the luma PIL computes from the coloured image, to within rounding
            png = client.get(f"/api/studies/{study['id']}/items/{item['id']}.png", headers=organiser(app)).content
            expected = np.asarray(Image.fromarray(colour[item["source_index"]]).convert("L"), dtype=int)
            assert np.abs(np.asarray(Image.open(io.BytesIO(png)), dtype=int) - expected).max() <= 1


def test_a_readers_answers_give_the_accuracy_computed_by_hand(client, app) -> None:
    study = make_study(client, app)
    token = study["readers"][1]["token"]  # bob
    truths = []
    for position in range(10):
        truth = "real" if looks_real(client.get(f"/api/read/{token}/image/{position}").content) else "synthetic"
        truths.append(truth)
        said = truth if position < 7 else ("real" if truth == "synthetic" else "synthetic")  # 7 right, 3 wrong
        response = answer(client, token, position, said, confidence=5 if position < 7 else 1)
        assert response.status_code == 200
        assert response.json() == {"saved": True, "position": position + 1, "answered": position + 1, "total": 20,
                                   "done": False}  # nothing about right or wrong
    results = client.get(f"/api/studies/{study['id']}/results", headers=organiser(app)).json()
    pooled = results["pooled"]
    assert (results["n_answers"], pooled["n"], pooled["correct"], pooled["accuracy"]) == (10, 10, 7, 0.7)
    synthetic_seen = truths.count("synthetic")
    synthetic_caught = sum(t == "synthetic" for t in truths[:7])
    assert pooled["sensitivity"] == pytest.approx(synthetic_caught / synthetic_seen)
    assert pooled["specificity"] == pytest.approx((7 - synthetic_caught) / (10 - synthetic_seen))
    assert pooled["binomial_p"] == pytest.approx(2 * (120 + 45 + 10 + 1) / 1024)  # P(|X - 5| >= 2), X ~ B(10, 1/2)
    assert [r["reader"] for r in results["readers"]] == ["bob"]
    by_level = {c["confidence"]: c for c in results["calibration"]}
    assert (by_level[5]["n"], by_level[5]["accuracy"], by_level[1]["n"], by_level[1]["accuracy"]) == (7, 1.0, 3, 0.0)
    assert results["progress"] == [{"name": "ann", "answered": 0, "total": 20},
                                   {"name": "bob", "answered": 10, "total": 20}]
    csv_response = client.get(f"/api/studies/{study['id']}/results.csv", headers=organiser(app))
    assert csv_response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(csv_response.text)))
    assert list(rows[0]) == ["study", "reader", "position", "item", "truth", "answer", "correct", "confidence",
                             "answered_at", "response_ms"]
    assert len(rows) == 10 and sum(int(r["correct"]) for r in rows) == 7
    assert [r["truth"] for r in rows] == truths and {r["reader"] for r in rows} == {"bob"}
    assert {r["study"] for r in rows} == {study["id"]} and {r["response_ms"] for r in rows} == {"1200"}
    listed = client.get("/api/studies", headers=organiser(app)).json()["studies"]
    assert [(s["id"], s["n_answers"], s["n_expected"]) for s in listed] == [(study["id"], 10, 40)]


def test_no_answers_yet_gives_empty_results(client, app) -> None:
    study = make_study(client, app)
    results = client.get(f"/api/studies/{study['id']}/results", headers=organiser(app)).json()
    assert results["n_answers"] == 0 and results["pooled"] is None
    csv_text = client.get(f"/api/studies/{study['id']}/results.csv", headers=organiser(app)).text
    assert csv_text.splitlines() == ["study,reader,position,item,truth,answer,correct,confidence,answered_at,"
                                     "response_ms"]


def test_a_reload_resumes_at_the_first_unanswered_image(client, app) -> None:
    study = make_study(client, app)
    token = study["readers"][0]["token"]
    for position in (0, 1, 2, 5):
        assert answer(client, token, position, "real").status_code == 200
    reloaded = TestClient(app, base_url="http://127.0.0.1")  # a new browser session: nothing kept but the link
    page = reloaded.get(f"/read/{token}")
    assert page.status_code == 200 and f'content="{token}"' in page.text and "<title>round 1 · synthmed" in page.text
    state = reloaded.get(f"/api/read/{token}/state").json()
    assert state == {"position": 3, "answered": 4, "total": 20, "done": False, "study": "round 1", "reader": "ann"}
    for position in [3, 4, *range(6, 20)]:
        assert answer(reloaded, token, position, "synthetic").status_code == 200
    assert reloaded.get(f"/api/read/{token}/state").json()["done"] is True
    assert reloaded.get(f"/api/read/{token}/state").json()["position"] == 20


def test_the_same_answer_again_is_accepted_once_and_a_changed_one_is_409(client, app, tmp_path) -> None:
    study = make_study(client, app)
    token = study["readers"][0]["token"]
    first = answer(client, token, 4, "synthetic", confidence=2)
    again = answer(client, token, 4, "synthetic", confidence=2, response_ms=999)
    assert first.status_code == again.status_code == 200 and again.json()["answered"] == 1
    assert "already answered" in one_line_error(answer(client, token, 4, "real", confidence=2), 409)
    one_line_error(answer(client, token, 4, "synthetic", confidence=3), 409)
    with sqlite3.connect(tmp_path / "web.sqlite3") as db:
        assert db.execute("SELECT position, answer, confidence, response_ms FROM answers").fetchall() == \
            [(4, "synthetic", 2, 1200)]


@pytest.mark.parametrize(("fields", "status", "words"), [
    ({"real": "/etc"}, 403, "/etc: real source is outside"),
    ({"synthetic": "../outside.npz"}, 403, "../outside.npz: synthetic source is outside"),
    ({"real": "missing.npz"}, 400, "missing.npz: no such file"),
    ({"real": ""}, 400, "real: a source is required"),
    ({"n_per_class": 13}, 400, "has 12 images in split 'test', fewer than the 13"),
    ({"n_per_class": 0}, 400, "n_per_class must be a whole number"),
    ({"n_per_class": "10"}, 400, "n_per_class must be a whole number"),
    ({"n_per_class": True}, 400, "n_per_class must be a whole number"),
    ({"n_per_class": 1001}, 400, "n_per_class must be a whole number from 1 to 1000"),
    ({"name": "  "}, 400, "the study's name must be"),
    ({"name": "round\u20281"}, 400, "the study's name must be 1 to 200 printable characters"),
    ({"readers": 0}, 400, "readers must be a whole number"),
    ({"readers": 101}, 400, "readers must be a whole number from 1 to 100"),
    ({"readers": [f"r{i}" for i in range(101)]}, 400, "readers must be a count (1 to 100) or a list of 1 to 100 names"),
    ({"readers": ["ann\u2028bob"]}, 400, "a reader's name must be 1 to 200 printable characters"),
    ({"readers": ["an\x85n"]}, 400, "a reader's name must be 1 to 200 printable characters"),
    ({"readers": ["an\x7fn"]}, 400, "a reader's name must be 1 to 200 printable characters"),
    ({"readers": ["a", "a"]}, 400, "reader names must differ"),
    ({"readers": "three"}, 400, "readers must be a count"),
    ({"seed": -1}, 400, "seed must be"),
    ({"real_split": "holdout"}, 400, "real_split must be one of"),
    ({"colour": "red"}, 400, "unknown field 'colour'"),
])
def test_bad_study_input_is_a_one_line_4xx(client, app, root, fields, status, words) -> None:
    (root.parent / "outside.npz").write_bytes((root / "real.npz").read_bytes())  # exists, but outside the root
    response = client.post("/api/studies", headers=organiser(app),
                           json={"name": "x", "real": "real.npz", "synthetic": "synthetic.npz", "n_per_class": 10,
                                 "readers": 2, **fields})
    assert words in one_line_error(response, status)


def test_a_link_inside_the_root_to_a_file_outside_it_is_refused(client, app, root, tmp_path) -> None:
    outside = tmp_path / "elsewhere.npz"
    outside.write_bytes((root / "real.npz").read_bytes())
    link = root / "link.npz"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    response = client.post("/api/studies", headers=organiser(app),
                           json={"name": "x", "real": "link.npz", "synthetic": "synthetic.npz", "n_per_class": 2})
    assert "link.npz: real source is outside" in one_line_error(response, 403)


def test_a_folder_given_with_source_dir_is_allowed(root, tmp_path) -> None:
    extra = tmp_path / "scans"
    extra.mkdir()
    write_sources(extra)
    app = create_app(WebSettings(root=root, database=tmp_path / "db.sqlite3", source_dirs=(extra,)))
    client = TestClient(app, base_url="http://127.0.0.1")
    study = make_study(client, app, real=str(extra / "real.npz"), n_per_class=3, readers=1)
    assert study["n_items"] == 6 and str(extra / "real.npz") in study["real_source"]


def test_bad_requests_and_body_are_one_line_4xx(client, app) -> None:
    headers = {**organiser(app), "Content-Type": "application/json"}
    assert "must be JSON" in one_line_error(client.post("/api/studies", content=b"{nope", headers=headers), 400)
    assert "JSON object" in one_line_error(client.post("/api/studies", content=b"[1]", headers=headers), 400)
    assert "larger than" in one_line_error(client.post("/api/studies", content=b" " * 70_000, headers=headers), 413)
    assert one_line_error(client.get("/api/studies/nosuchstudy", headers=organiser(app)), 404) == "no such study"
    study = make_study(client, app)
    assert one_line_error(client.get(f"/api/studies/{study['id']}/items/ffff.png", headers=organiser(app)),
                          404) == "no such item"


@pytest.mark.parametrize(("body", "words"), [
    ({"position": 0, "answer": "maybe", "confidence": 3}, "answer must be 'real' or 'synthetic'"),
    ({"position": 0, "answer": "Real", "confidence": 3}, "answer must be"),
    ({"position": 0, "confidence": 3}, "answer must be"),
    ({"position": 0, "answer": "real", "confidence": 0}, "confidence must be a whole number from 1 to 5"),
    ({"position": 0, "answer": "real", "confidence": 6}, "confidence must be"),
    ({"position": 0, "answer": "real", "confidence": "3"}, "confidence must be"),
    ({"position": 0, "answer": "real", "confidence": 2.5}, "confidence must be"),
    ({"position": 0, "answer": "real", "confidence": True}, "confidence must be"),
    ({"position": 0, "answer": "real"}, "confidence must be"),
    ({"position": -1, "answer": "real", "confidence": 3}, "position must be"),
    ({"position": 2**63, "answer": "real", "confidence": 3},
     "position must be a whole number from 0 to 2147483647 (got 9223372036854775808)"),
    ({"position": 2**31, "answer": "real", "confidence": 3}, "position must be a whole number from 0 to 2147483647"),
    ({"position": 2**31 - 1, "answer": "real", "confidence": 3}, "position must be from 0 to 19 (got 2147483647)"),
    ({"position": 20, "answer": "real", "confidence": 3}, "position must be from 0 to 19 (got 20)"),
    ({"position": "1", "answer": "real", "confidence": 3}, "position must be"),
    ({"answer": "real", "confidence": 3}, "position must be"),
    ({"position": 0, "answer": "real", "confidence": 3, "response_ms": -5}, "response_ms must be"),
    ({"position": 0, "answer": "real", "confidence": 3, "truth": "real"}, "unknown field 'truth'"),
])
def test_bad_answers_are_one_line_400_and_store_nothing(client, app, tmp_path, body, words) -> None:
    study = make_study(client, app)
    token = study["readers"][0]["token"]
    response = client.post(f"/api/read/{token}/answer", json=body, headers={"X-Synthmed-Token": token})
    assert words in one_line_error(response, 400)
    with sqlite3.connect(tmp_path / "web.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 0


def test_images_only_at_the_readers_positions(client, app) -> None:
    study = make_study(client, app)
    token = study["readers"][0]["token"]
    assert client.get(f"/api/read/{token}/image/19").status_code == 200
    for position in ("20", "-1", "1e1", "x", "99999999999", str(2**63), "\u00b2", "\u0661", "0" * 20 + "1"):
        assert one_line_error(client.get(f"/api/read/{token}/image/{position}"), 404) == "no image at that position"


@pytest.fixture(scope="module")
def tiny_run(root: Path) -> Path:
    import synthmed

    result = synthmed.train(out=root / "runs" / "tiny", steps=2, g_channels=8, d_channels=8, latent_dim=16,
                            batch_size=16, progress=False, sample_every=1000, checkpoint_every=1000)
    return Path(result.run_dir)


def test_a_run_is_sampled_as_the_synthetic_source(client, app, root, tiny_run, monkeypatch) -> None:
    import synthmed.api

    load, devices = synthmed.api.load, []

    def load_and_note_the_device(run, checkpoint=None, device="auto"):  # noqa: ANN001, ANN202
        devices.append(device)
        return load(run, checkpoint, device)

    monkeypatch.setattr(synthmed.api, "load", load_and_note_the_device)
    study = make_study(client, app, real="breastmnist", synthetic="runs/tiny", n_per_class=4, readers=1)
    assert study["n_items"] == 8 and (study["image_size"], study["image_mode"]) == (28, "L")
    assert study["notes"] == ""  # BreastMNIST and a run trained on it: 28 px grey both
    assert devices == ["cpu"]  # a GPU, when there is one, is left to training
    assert "run " in study["synthetic_source"] and "(step 2): 4 samples, seed 3" in study["synthetic_source"]
    assert "breastmnist (split test): 4 of" in study["real_source"]
    token = study["readers"][0]["token"]
    for position in range(8):
        image = Image.open(io.BytesIO(client.get(f"/api/read/{token}/image/{position}").content))
        assert (image.mode, image.size) == ("L", (28, 28))
    samples = load(tiny_run, device="cpu").sample(4, seed=3)
    from synthmed.web.images import png_bytes

    synthetic = {item["id"] for item in study["items"] if item["truth"] == "synthetic"}
    stored = {client.get(f"/api/studies/{study['id']}/items/{i}.png", headers=organiser(app)).content
              for i in synthetic}
    assert stored == {png_bytes(sample, compress_level=0) for sample in samples}  # the run's own, seeded by the study


def test_a_run_whose_checkpoints_lie_outside_the_allowed_folders_is_refused(client, app, root, tiny_run,
                                                                            tmp_path) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tiny_run / "checkpoints", elsewhere)
    folder_link = root / "runs" / "folder-link"  # the whole checkpoints folder links out
    folder_link.mkdir()
    shutil.copy(tiny_run / "config.yaml", folder_link)
    (folder_link / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    file_links = root / "runs" / "file-links"  # a real checkpoints folder whose files link out
    (file_links / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_run / "config.yaml", file_links)
    for file in elsewhere.iterdir():
        (file_links / "checkpoints" / file.name).symlink_to(file)
    for run in ("runs/folder-link", "runs/file-links"):
        response = client.post("/api/studies", headers=organiser(app), json={
            "name": "x", "real": "breastmnist", "synthetic": run, "n_per_class": 2})
        assert one_line_error(response, 403) == \
            f"{run}: the run's checkpoints are outside the runs folder and every --source-dir"
    assert client.get("/api/studies", headers=organiser(app)).json()["studies"] == []


def test_adding_readers_refuses_unknown_fields_too_many_readers_and_unprintable_names(client, app) -> None:
    study = make_study(client, app)
    url = f"/api/studies/{study['id']}/readers"
    assert one_line_error(client.post(url, json={"readers": 1, "names": ["eve"]}, headers=organiser(app)), 400) == \
        "unknown field 'names' (expected readers)"
    assert "from 1 to 100" in one_line_error(client.post(url, json={"readers": 101}, headers=organiser(app)), 400)
    for name in ("eve\u2028mallory", "ev\x85e", "ev\x7fe", "ev\ne"):  # inside: strip() trims ends
        assert "printable" in one_line_error(client.post(url, json={"readers": [name]}, headers=organiser(app)), 400)
    assert [r["name"] for r in client.get(f"/api/studies/{study['id']}", headers=organiser(app)).json()["readers"]] \
        == ["ann", "bob"]
