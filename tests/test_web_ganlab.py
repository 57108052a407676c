"""GAN Lab's web API: sessions, steps, one-line errors, the session cap, and who may call it."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web app needs synthmed[web] (pip install '.[dev]')")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from synthmed import losses  # noqa: E402
from synthmed.data import toy2d  # noqa: E402
from synthmed.web import ganlab as web_ganlab  # noqa: E402
from synthmed.web.app import TOKEN_HEADER, WebSettings, create_app, static_dir  # noqa: E402

TOKEN = "ganlab-test-organiser-token-0123456789abcdef"
TINY = {"g_hidden": 16, "g_layers": 1, "d_hidden": 16, "d_layers": 1, "batch_size": 32}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("runs")
    app = create_app(WebSettings(root=root, database=root / "web.sqlite3", organiser_token=TOKEN))
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        test_client.headers[TOKEN_HEADER] = TOKEN
        yield test_client
    # GAN Lab leaves torch's threads to synthmed.web.server.serve (checked below); restored anyway, so that a
    # regression could not slow the test files after this one.
    torch.set_num_threads(threads)


def new_session(client: TestClient, **config: object) -> dict:
    response = client.post("/api/ganlab/sessions", json={"config": {**TINY, **config}})
    assert response.status_code == 200, response.text
    return response.json()


def one_line_detail(response) -> str:  # noqa: ANN001
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    return detail


def test_create_step_and_read_a_session(client: TestClient) -> None:
    created = new_session(client, distribution="grid", seed=5)
    session_id, state = created["id"], created["state"]
    assert state["step"] == 0 and state["losses"]["step"] == [] and state["config"]["distribution"] == "grid"
    stepped = client.post(f"/api/ganlab/sessions/{session_id}/step", json={"steps": 50})
    assert stepped.status_code == 200
    after = stepped.json()
    assert after["step"] == 50
    assert after["losses"]["step"] == list(range(1, 51)) and len(after["losses"]["loss_g"]) == 50
    assert after["divergences"]["step"] == [0, 10, 20, 30, 40, 50]
    assert after["fake"] != state["fake"] and after["verdict"]["values"] != state["verdict"]["values"]
    assert after["real"] == state["real"]  # the real sample is fixed
    assert client.get(f"/api/ganlab/sessions/{session_id}").json() == after  # reading trains nothing
    assert client.post(f"/api/ganlab/sessions/{session_id}/step", json={}).json()["step"] == 51  # default: 1 step


def test_sessions_leave_torch_threads_alone(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # set_num_threads from a worker thread would leak into other threads (a study being sampled, say): the server
    # sets the process's threads once, before serving. Many cores are reported, so that nothing may lower them.
    calls: list[int] = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    session_id = new_session(client, seed=3)["id"]
    assert client.post(f"/api/ganlab/sessions/{session_id}/step", json={"steps": 2}).json()["step"] == 2
    assert calls == []


def test_same_config_same_seed_gives_the_same_states(client: TestClient) -> None:
    first, second = new_session(client, seed=11), new_session(client, seed=11)
    assert first["id"] != second["id"] and first["state"] == second["state"]
    states = [client.post(f"/api/ganlab/sessions/{s['id']}/step", json={"steps": 7}).json() for s in (first, second)]
    assert states[0] == states[1]


@pytest.mark.parametrize(("config", "word"), [
    ({"g_hidden": 100_000}, "g_hidden"), ({"d_layers": 50}, "d_layers"), ({"batch_size": 5000}, "batch_size"),
    ({"loss": "nope"}, "loss"), ({"distribution": "moons"}, "distribution"), ({"lr_g": -1}, "lr_g"),
    ({"bogus": 1}, "bogus"), ({"g_hidden": "wide"}, "g_hidden"),
])
def test_bad_configs_are_422_with_one_line(client: TestClient, config: dict, word: str) -> None:
    response = client.post("/api/ganlab/sessions", json={"config": config})
    assert response.status_code == 422
    assert word in one_line_detail(response)


@pytest.mark.parametrize(("body", "status"), [(b"{not json", 400), (b"[1, 2]", 400), (b'{"config": 3}', 422)])
def test_malformed_bodies_are_4xx_with_one_line(client: TestClient, body: bytes, status: int) -> None:
    response = client.post("/api/ganlab/sessions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    one_line_detail(response)


@pytest.mark.parametrize("steps", [0, 201, -3, 2.5, "10", True, None])
def test_step_counts_outside_1_to_200_are_422(client: TestClient, steps: object) -> None:
    session_id = new_session(client)["id"]
    response = client.post(f"/api/ganlab/sessions/{session_id}/step", json={"steps": steps})
    assert response.status_code == 422 and "1 to 200" in one_line_detail(response)


def test_unknown_and_deleted_sessions_are_404(client: TestClient) -> None:
    for bad in ("0123456789abcdef", "no_such_id", "x" * 65):
        assert client.get(f"/api/ganlab/sessions/{bad}").status_code == 404
        response = client.post(f"/api/ganlab/sessions/{bad}/step", json={"steps": 1})
        assert response.status_code == 404
        one_line_detail(response)
    session_id = new_session(client)["id"]
    assert client.delete(f"/api/ganlab/sessions/{session_id}").json() == {"deleted": session_id}
    assert client.get(f"/api/ganlab/sessions/{session_id}").status_code == 404
    assert client.delete(f"/api/ganlab/sessions/{session_id}").status_code == 404


def test_the_least_recently_used_session_is_dropped_beyond_the_cap(client: TestClient) -> None:
    ids = [new_session(client, seed=k)["id"] for k in range(web_ganlab.SESSION_CAP)]
    assert client.get(f"/api/ganlab/sessions/{ids[0]}").status_code == 200  # ids[0] is now the most recent
    newest = new_session(client)["id"]
    assert client.get(f"/api/ganlab/sessions/{ids[1]}").status_code == 404  # the least recently used went
    for kept in (ids[0], *ids[2:], newest):
        assert client.get(f"/api/ganlab/sessions/{kept}").status_code == 200
    assert len(client.app.state.ganlab_sessions) == web_ganlab.SESSION_CAP


def test_organiser_token_required(client: TestClient) -> None:
    session_id = new_session(client)["id"]
    anonymous = {TOKEN_HEADER: ""}
    one = f"/api/ganlab/sessions/{session_id}"
    for method, path in [("GET", "/api/ganlab/options"), ("POST", "/api/ganlab/sessions"), ("POST", f"{one}/step"),
                         ("GET", one), ("DELETE", one)]:
        assert client.request(method, path, headers=anonymous, json={}).status_code == 403, (method, path)
        wrong = {TOKEN_HEADER: "wrong-token-wrong-token-wrong-token"}
        assert client.request(method, path, headers=wrong, json={}).status_code == 403, (method, path)
    assert client.get(f"/api/ganlab/sessions/{session_id}").status_code == 200  # still there
    page = client.get("/ganlab", headers=anonymous)
    assert page.status_code == 403 and TOKEN not in page.text


def test_cross_site_posts_are_refused_even_with_the_token(client: TestClient) -> None:
    session_id = new_session(client)["id"]
    evil = {"Origin": "http://evil.example"}
    assert client.post("/api/ganlab/sessions", json={"config": TINY}, headers=evil).status_code == 403
    response = client.post(f"/api/ganlab/sessions/{session_id}/step", json={"steps": 5}, headers=evil)
    assert response.status_code == 403
    assert client.delete(f"/api/ganlab/sessions/{session_id}", headers=evil).status_code == 403
    assert client.get(f"/api/ganlab/sessions/{session_id}").json()["step"] == 0  # nothing ran
    same = {"Origin": "http://127.0.0.1"}
    assert client.post(f"/api/ganlab/sessions/{session_id}/step", json={"steps": 1}, headers=same).status_code == 200


def test_options_match_the_registries(client: TestClient) -> None:
    options = client.get("/api/ganlab/options").json()
    assert options["distributions"] == list(toy2d.NAMES)
    assert [entry["name"] for entry in options["losses"]] == list(losses.ADVERSARIAL_LOSSES)
    assert options["limits"]["steps"] == [1, 200] and options["defaults"]["loss"] == "bce"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.options: dict[str, list[str]] = {}
        self.select: str | None = None
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(found["id"])
        if "style" in found or any(name.startswith("on") for name in found):
            self.inline.append(tag)
        if tag == "select":
            self.select = found.get("id")
            self.options[self.select] = []
        elif tag == "option" and self.select:
            self.options[self.select].append(found.get("value"))
        elif tag == "script" and "src" not in found:
            self.inline.append("script")


def test_page_serves_its_controls_with_the_registries_choices(client: TestClient) -> None:
    response = client.get("/ganlab")
    assert response.status_code == 200
    page = _Page()
    page.feed(response.text)
    assert f'content="{TOKEN}"' in response.text and "{{" not in response.text
    expected = {"ganlab-distribution", "ganlab-loss", "ganlab-g-hidden", "ganlab-g-layers", "ganlab-d-hidden",
                "ganlab-d-layers", "ganlab-lr-g", "ganlab-lr-d", "ganlab-batch", "ganlab-reset", "ganlab-step",
                "ganlab-play", "ganlab-step-count", "ganlab-canvas", "ganlab-loss-chart", "ganlab-divergence-chart"}
    assert expected <= page.ids
    assert page.options["ganlab-distribution"] == list(toy2d.NAMES)
    assert page.options["ganlab-loss"] == list(losses.ADVERSARIAL_LOSSES)
    assert page.inline == []  # the CSP allows no inline scripts, styles or handlers
    for name in ("ganlab.js", "ganlab.css"):
        assert (Path(static_dir()) / name).is_file()
        assert client.get(f"/static/{name}").status_code == 200


def test_settings_outside_config_are_refused_not_ignored(client: TestClient) -> None:
    response = client.post("/api/ganlab/sessions", json={"loss": "hinge"})
    assert response.status_code == 400 and one_line_detail(response).startswith("unknown field 'loss'")
    created = new_session(client, loss="hinge")
    assert created["state"]["config"]["loss"] == "hinge"
    response = client.post(f"/api/ganlab/sessions/{created['id']}/step", json={"steps": 2, "n": 3})
    assert response.status_code == 400 and "unknown field 'n'" in one_line_detail(response)


def test_oversized_bodies_are_refused_before_parsing(client: TestClient) -> None:
    response = client.post("/api/ganlab/sessions", content=b'{"config": {"seed": 1}, "pad": "' + b"x" * 70_000 + b'"}')
    assert response.status_code == 413 and "64 KiB" in one_line_detail(response)
