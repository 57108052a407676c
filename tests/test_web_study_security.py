"""The visual Turing test's boundaries: what a reader's link opens (their own images and answers, nothing else),
what needs the organiser, and the cross-site and header-token rules on answers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs synthmed[web] (pip install '.[dev]')")

from fastapi.testclient import TestClient  # noqa: E402

from synthmed.web.app import TOKEN_COOKIE, WebSettings, cookie_value, create_app  # noqa: E402
from synthmed.web.security import new_token  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

NOT_A_LINK = "no such reader link"


@pytest.fixture()
def setup(tmp_path: Path):  # noqa: ANN201
    """Two studies: the first with readers ann and bob, the second with carl."""
    root = tmp_path / "root"
    root.mkdir()
    rng = np.random.default_rng(1)
    np.savez(root / "real.npz", images=rng.integers(150, 250, (20, 8, 8), dtype=np.uint8))
    np.savez(root / "synthetic.npz", images=rng.integers(0, 100, (20, 8, 8), dtype=np.uint8))
    app = create_app(WebSettings(root=root, database=tmp_path / "web.sqlite3"))
    client = TestClient(app, base_url="http://127.0.0.1", follow_redirects=False)
    headers = {"X-Synthmed-Token": app.state.organiser_token}
    studies = []
    for name, readers in (("first", ["ann", "bob"]), ("second", ["carl"])):
        response = client.post("/api/studies", headers=headers, json={
            "name": name, "real": "real.npz", "synthetic": "synthetic.npz", "n_per_class": 3, "readers": readers,
            "real_split": "all"})
        assert response.status_code == 201, response.text
        studies.append(response.json())
    return app, client, studies, tmp_path / "web.sqlite3"


def answer_count(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def organiser_urls(study: dict) -> list[str]:
    item = study["items"][0]["id"]
    return ["/studies", "/api/studies", f"/api/studies/{study['id']}", f"/api/studies/{study['id']}/results",
            f"/api/studies/{study['id']}/results.csv", f"/api/studies/{study['id']}/items/{item}.png"]


def test_a_reader_token_opens_no_organiser_page_or_endpoint(setup) -> None:
    app, client, (first, second), _ = setup
    ann = first["readers"][0]["token"]
    for study in (first, second):
        for url in organiser_urls(study):
            assert client.get(url).status_code == 403, url
            assert client.get(url, headers={"X-Synthmed-Token": ann}).status_code == 403, url
            for cookie in (ann, cookie_value(ann)):  # a reader's token as the sign-in cookie, raw or derived
                client.cookies.set(TOKEN_COOKIE, cookie)
                assert client.get(url).status_code == 403, url
            client.cookies.clear()
    signed_in = client.get(f"/studies?token={ann}")
    assert signed_in.status_code == 403 and "set-cookie" not in signed_in.headers
    posts = [("/api/studies", {"name": "x", "real": "real.npz", "synthetic": "synthetic.npz", "n_per_class": 1}),
             (f"/api/studies/{first['id']}/readers", {"readers": 1})]
    for url, body in posts:
        assert client.post(url, json=body, headers={"X-Synthmed-Token": ann}).status_code == 403
    organiser = {"X-Synthmed-Token": app.state.organiser_token}
    assert all(client.get(url, headers=organiser).status_code == 200 for url in organiser_urls(first))


def test_organiser_posts_need_the_header_not_just_the_cookie_and_no_foreign_origin(setup) -> None:
    app, client, (first, _), _ = setup
    token = app.state.organiser_token
    body = {"readers": 1}
    client.cookies.set(TOKEN_COOKIE, cookie_value(token))  # the sign-in cookie holds a value derived from the token
    assert client.get(f"/api/studies/{first['id']}").status_code == 200  # the cookie is enough to read
    assert client.post(f"/api/studies/{first['id']}/readers", json=body).status_code == 403
    evil = client.post(f"/api/studies/{first['id']}/readers", json=body,
                       headers={"X-Synthmed-Token": token, "Origin": "http://evil.example"})
    assert evil.status_code == 403
    client.cookies.clear()
    assert len(client.get(f"/api/studies/{first['id']}", headers={"X-Synthmed-Token": token}).json()["readers"]) == 2
    same = client.post(f"/api/studies/{first['id']}/readers", json=body,
                       headers={"X-Synthmed-Token": token, "Origin": "http://127.0.0.1"})
    assert same.status_code == 201


def test_reader_answers_need_their_token_in_the_header_and_this_origin(setup) -> None:
    _, client, (first, _), database = setup
    ann, bob = (r["token"] for r in first["readers"])
    body = {"position": 0, "answer": "real", "confidence": 3}
    url = f"/api/read/{ann}/answer"
    refused = [
        {},  # the link alone (a cross-site form could post that)
        {"X-Synthmed-Token": bob},  # another reader's token
        {"X-Synthmed-Token": ann, "Origin": "http://evil.example"},
        {"X-Synthmed-Token": ann, "Sec-Fetch-Site": "cross-site"},
        {"X-Synthmed-Token": ann, "Origin": "null"},
    ]
    for headers in refused:
        response = client.post(url, json=body, headers=headers)
        assert response.status_code == 403, headers
        assert "\n" not in response.json()["detail"]
    assert answer_count(database) == 0
    ok = client.post(url, json=body, headers={"X-Synthmed-Token": ann, "Origin": "http://127.0.0.1",
                                              "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200 and answer_count(database) == 1


def test_unknown_tokens_are_404_saying_nothing_more(setup) -> None:
    _, client, (first, _), _ = setup
    ann = first["readers"][0]["token"]
    near = ann[:-1] + ("A" if ann[-1] != "A" else "B")
    for token in (new_token(), near, "short", "x" * 101):
        assert client.get(f"/api/read/{token}/state").json() == {"detail": NOT_A_LINK}
        assert client.get(f"/api/read/{token}/state").status_code == 404
        assert client.get(f"/api/read/{token}/image/0").json() == {"detail": NOT_A_LINK}
        page = client.get(f"/read/{token}")
        assert page.status_code == 404 and "first" not in page.text and "study" not in page.text.split("</title>")[1]
        posted = client.post(f"/api/read/{token}/answer", headers={"X-Synthmed-Token": token},
                             json={"position": 0, "answer": "real", "confidence": 3})
        assert posted.status_code == 404 and posted.json() == {"detail": NOT_A_LINK}


def test_a_reader_sees_only_their_own_positions_and_never_truth_or_item_ids(setup) -> None:
    app, client, (first, second), _ = setup
    ann = first["readers"][0]["token"]
    carl = second["readers"][0]["token"]
    item_ids = [item["id"] for study in (first, second) for item in study["items"]]
    state = client.get(f"/api/read/{ann}/state").json()
    assert state == {"position": 0, "answered": 0, "total": 6, "done": False, "study": "first", "reader": "ann"}
    assert client.get(f"/api/read/{carl}/state").json()["study"] == "second"
    for position in range(6):
        response = client.get(f"/api/read/{ann}/image/{position}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        headers = " ".join(f"{k}: {v}" for k, v in response.headers.items()).lower()
        assert "real" not in headers and "synthetic" not in headers
        assert not any(item in headers for item in item_ids)
    assert client.get(f"/api/read/{ann}/image/6").status_code == 404  # only this reader's six positions
    for item in item_ids[:3] + item_ids[-3:]:  # the reader API has no way to ask for an item by id
        assert client.get(f"/api/read/{ann}/image/{item}").status_code == 404
        assert client.get(f"/api/read/{ann}/items/{item}.png").status_code == 404
    page = client.get(f"/read/{ann}").text
    assert not any(item in page for item in item_ids) and "truth" not in page
    saved = client.post(f"/api/read/{ann}/answer", headers={"X-Synthmed-Token": ann},
                        json={"position": 0, "answer": "real", "confidence": 3}).json()
    assert set(saved) == {"saved", "position", "answered", "total", "done"}
    for other in (first["readers"][1]["token"], carl):  # ann's answer is hers alone
        assert client.get(f"/api/read/{other}/state").json()["answered"] == 0
