"""The latent explorer (synthmed.web.latent): images along the spherical path through seeds' latents, from the
EMA generator, the class of a conditional run, one-line refusals of bad requests, and the cache of loaded models
(least recently used dropped, newer checkpoints loaded, one load for requests arriving together).

Two tiny runs are trained once for the module: an unconditional one (4 steps, 16-d latent, BreastMNIST) and a
conditional one (2 steps on 16 px images of 3 classes, the label embedding concatenated to z, so classes differ
from the first step on). The cache tests copy them into a root of their own.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the web app needs synthmed[web] (pip install '.[dev]')")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import synthmed  # noqa: E402
import synthmed.api  # noqa: E402
from synthmed.viz.grid import to_uint8  # noqa: E402
from synthmed.web.app import TOKEN_COOKIE, WebSettings, cookie_value, create_app  # noqa: E402
from synthmed.web.images import png_bytes  # noqa: E402
from synthmed.web.latent import DISPLAY_SIDE, MAX_MODELS, STRIP_SIDE, display_scale  # noqa: E402
from test_conditional_recipes import write_labelled_npz  # noqa: E402  (the same three-class images)
from webserver import Client, thread_server  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TOKEN = "organiser-token-for-the-latent-tests-0123456789"
LATENT = 16


def noise(seed: int, dim: int = LATENT) -> torch.Tensor:
    """The documented latent of a seed."""
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    base = tmp_path_factory.mktemp("web-latent")
    runs = base / "runs"
    plain = synthmed.train(out=runs / "a", steps=4, g_channels=8, d_channels=8, latent_dim=LATENT, batch_size=16,
                           progress=False, sample_every=2, checkpoint_every=1000, device="cpu").run_dir
    assert (plain / "samples").is_dir() and (plain / "losses.csv").is_file()
    synthmed.train(write_labelled_npz(base / "labelled.npz"), recipe="conditional", conditioning="concat",
                   out=runs / "c", steps=2, batch_size=8, sample_every=2, checkpoint_every=1000, preview_count=12,
                   device="cpu", g_channels=8, d_channels=8, latent_dim=8, progress=False)
    (runs / "no-checkpoint").mkdir()
    (runs / "no-checkpoint" / "config.yaml").write_text("recipe: unconditional\n")
    (runs / "translation").mkdir()
    (runs / "translation" / "config.yaml").write_text("recipe: pix2pix\n")
    return runs


@pytest.fixture(scope="module")
def client(root: Path) -> TestClient:
    settings = WebSettings(root=root, database=root.parent / "web.sqlite3", organiser_token=TOKEN)
    return TestClient(create_app(settings), base_url="http://127.0.0.1", headers={"X-Synthmed-Token": TOKEN})


@pytest.fixture(scope="module")
def ids(client: TestClient) -> dict[str, str]:
    return {run["name"]: run["id"] for run in client.get("/api/latent/runs").json()}


def image_png(images: torch.Tensor) -> bytes:
    """What the explorer should send for a single generated image."""
    return png_bytes(images[0], scale=display_scale(images.shape[-2], images.shape[-1], DISPLAY_SIDE))


def get_png(client: TestClient, run_id: str, query: str, kind: str = "image") -> bytes:
    response = client.get(f"/api/latent/{run_id}/{kind}.png?{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return response.content


def test_only_runs_that_can_sample_are_listed(client: TestClient) -> None:
    runs = {run["name"]: run for run in client.get("/api/latent/runs").json()}
    assert sorted(runs) == ["a", "c"]  # no checkpoint, or no latent space: not offered
    assert (runs["a"]["latent_dim"], runs["a"]["conditional"], runs["a"]["class_names"]) == (LATENT, False, [])
    assert (runs["c"]["recipe"], runs["c"]["latent_dim"], runs["c"]["conditional"]) == ("conditional", 8, True)
    assert runs["c"]["class_names"] == ["left", "right", "top"]


def test_the_ends_and_the_middle_seed_of_the_path_are_the_seeds_own_images(client: TestClient, root: Path,
                                                                         ids: dict[str, str]) -> None:
    model = synthmed.load(root / "a", device="cpu")
    seed_a, seed_b, seed_c = (image_png(model.generate(noise(s)[None])) for s in (11, 22, 33))
    run = ids["a"]
    assert get_png(client, run, "seeds=11,22&t=0") == seed_a
    assert get_png(client, run, "seeds=11,22&t=1") == seed_b
    assert get_png(client, run, "seeds=11,22,33&t=0.5") == seed_b  # 3 seeds: halfway is the second seed exactly
    assert get_png(client, run, "seeds=11,22,33&t=1") == seed_c
    between = get_png(client, run, "seeds=11,22&t=0.5")
    assert between not in (seed_a, seed_b)
    assert Image.open(io.BytesIO(between)).size == (28 * display_scale(28, 28), 28 * display_scale(28, 28))


def test_between_seeds_the_path_is_spherical(client: TestClient, root: Path, ids: dict[str, str]) -> None:
    model = synthmed.load(root / "a", device="cpu")
    a, b = noise(11).double(), noise(22).double()
    omega = torch.arccos(torch.dot(a / a.norm(), b / b.norm()))
    spherical = (torch.sin(0.75 * omega) * a + torch.sin(0.25 * omega) * b) / torch.sin(omega)  # slerp, t = 1/4
    linear = 0.75 * a + 0.25 * b
    served = np.asarray(Image.open(io.BytesIO(get_png(client, ids["a"], "seeds=11,22&t=0.25"))), dtype=int)

    def pixels(z: torch.Tensor) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(image_png(model.generate(z.float()[None])))), dtype=int)

    assert np.abs(served - pixels(spherical)).max() <= 1  # float32 vs float64 arithmetic may move a level
    assert np.abs(served - pixels(linear)).max() > 1


def test_images_come_from_the_ema_generator(client: TestClient, root: Path, ids: dict[str, str]) -> None:
    model = synthmed.load(root / "a", device="cpu")
    assert "G_ema" in model.recipe.networks
    z = noise(5)[None]
    ema = image_png(model.generate(z))
    del model.recipe.networks["G_ema"]  # now generate falls back to the raw generator
    raw = image_png(model.generate(z))
    served = get_png(client, ids["a"], "seeds=5,6&t=0")
    assert served == ema and served != raw


def test_the_strip_holds_frames_along_the_path(client: TestClient, root: Path, ids: dict[str, str]) -> None:
    model = synthmed.load(root / "a", device="cpu")
    strip = np.asarray(Image.open(io.BytesIO(get_png(client, ids["a"], "seeds=3,4&frames=3", "strip"))))
    scale, tile = display_scale(28, 28, STRIP_SIDE), 28 + 2
    assert strip.shape[:2] == (scale * (tile + 2), scale * (3 * tile + 2))
    for frame, seed in ((0, 3), (2, 4)):  # the first frame is seed 3's image, the last seed 4's
        x = scale * (2 + frame * tile)
        expected = to_uint8(model.generate(noise(seed)[None]))[0, ..., 0].repeat(scale, 0).repeat(scale, 1)
        np.testing.assert_array_equal(strip[2 * scale:(2 + 28) * scale, x:x + 28 * scale], expected)


def test_the_class_chooses_a_conditional_runs_image(client: TestClient, root: Path, ids: dict[str, str]) -> None:
    model = synthmed.load(root / "c", device="cpu")
    recipe = model.recipe
    run = ids["c"]
    for label in (0, 2):
        labels = torch.tensor([label])
        expected = image_png(recipe.generate(recipe.latents_from_noise(labels, noise(7, 8)[None]), label=labels))
        assert get_png(client, run, f"seeds=7,8&t=0&class={label}") == expected
    one, two = get_png(client, run, "seeds=7,8&t=0.3&class=0"), get_png(client, run, "seeds=7,8&t=0.3&class=1")
    assert one != two
    assert get_png(client, run, "seeds=7,8&t=0.3&class=right") == two  # a class by name
    assert get_png(client, run, "seeds=7,8&t=0.3") == one  # class 0 when none is given


def test_requests_leave_torch_threads_alone(client: TestClient, ids: dict[str, str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # set_num_threads from a worker thread would leak into other threads: the server sets them once, before serving.
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    get_png(client, ids["a"], "seeds=1,2&t=0.5")
    get_png(client, ids["c"], "seeds=1,2&frames=3", "strip")
    assert calls == []


@pytest.mark.parametrize("query", [
    "t=0.5", "seeds=1&t=0.5", "seeds=1,2,3,4,5,6,7,8,9&t=0.5", "seeds=1,-2&t=0.5", "seeds=1,2147483648&t=0.5",
    "seeds=1,2.5&t=0.5", "seeds=1,,2&t=0.5", "seeds=a,b&t=0.5", "seeds=1,2", "seeds=1,2&t=-0.01", "seeds=1,2&t=1.01",
    "seeds=1,2&t=nan", "seeds=1,2&t=inf", "seeds=1,2&t=half", "seeds=1,2&t=0.5&class=0",
])
def test_bad_parameters_are_one_line_400s(client: TestClient, ids: dict[str, str], query: str) -> None:
    response = client.get(f"/api/latent/{ids['a']}/image.png?{query}")
    assert response.status_code == 400, query
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail


@pytest.mark.parametrize("query", ["seeds=1,2&t=0&class=3", "seeds=1,2&t=0&class=-1", "seeds=1,2&t=0&class=up",
                                   "seeds=1,2&frames=1", "seeds=1,2&frames=17", "seeds=1,2&frames=x"])
def test_bad_class_or_frame_count_is_a_one_line_400(client: TestClient, ids: dict[str, str], query: str) -> None:
    kind = "strip" if "frames" in query else "image"
    response = client.get(f"/api/latent/{ids['c']}/{kind}.png?{query}")
    assert response.status_code == 400, query
    assert "\n" not in response.json()["detail"]


def test_unknown_runs_and_runs_without_a_latent_space_are_404(client: TestClient) -> None:
    listing = {run["name"]: run["id"] for run in client.get("/api/runs").json()}
    for run_id in ("000000000000", "no-such-id!", listing["translation"], listing["no-checkpoint"]):
        response = client.get(f"/api/latent/{run_id}/image.png?seeds=1,2&t=0")
        assert response.status_code == 404, run_id
        assert "\n" not in response.json()["detail"]


def test_the_organiser_token_is_required(client: TestClient, ids: dict[str, str]) -> None:
    anonymous = TestClient(client.app, base_url="http://127.0.0.1")
    for path in ("/api/latent/runs", f"/api/latent/{ids['a']}/image.png?seeds=1,2&t=0",
                 f"/api/latent/{ids['a']}/strip.png?seeds=1,2"):
        assert anonymous.get(path).status_code == 403, path
    assert anonymous.get("/explore").status_code == 403
    # An <img> sends the sign-in cookie, not the header: that is enough for a GET.
    signed_in = TestClient(client.app, base_url="http://127.0.0.1", cookies={TOKEN_COOKIE: cookie_value(TOKEN)})
    assert signed_in.get(f"/api/latent/{ids['a']}/image.png?seeds=1,2&t=0").status_code == 200
    page = client.get("/explore")
    assert page.status_code == 200 and 'id="latent-run"' in page.text and "/static/explore.js" in page.text


# --- the model cache --------------------------------------------------------------------------------------------


@pytest.fixture
def cache_root(root: Path, tmp_path: Path) -> Path:
    """Four generative runs (one more than MAX_MODELS), a fresh root per test: copies of the trained runs (a1,
    a2 and a3 of a; c)."""
    runs = tmp_path / "runs"
    for name, source in (("a1", "a"), ("a2", "a"), ("a3", "a"), ("c", "c")):
        shutil.copytree(root / source, runs / name, ignore=shutil.ignore_patterns("samples"))
    return runs


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the runs the explorer loads, in order. Each load also waits 0.1 s, so that requests arriving
    together would overlap it were they not made to wait for it."""
    seen: list[str] = []
    load = synthmed.api.load

    def counted(run: Path, *args: object, **kwargs: object) -> synthmed.api.TrainedModel:
        seen.append(Path(run).name)
        time.sleep(0.1)
        return load(run, *args, **kwargs)

    monkeypatch.setattr(synthmed.api, "load", counted)
    return seen


@pytest.fixture
def cache_client(cache_root: Path) -> tuple[TestClient, dict[str, str]]:
    settings = WebSettings(root=cache_root, database=cache_root.parent / "web.sqlite3", organiser_token=TOKEN)
    client = TestClient(create_app(settings), base_url="http://127.0.0.1", headers={"X-Synthmed-Token": TOKEN})
    return client, {run["name"]: run["id"] for run in client.get("/api/latent/runs").json()}


def newer_checkpoint(run: Path, shift: float) -> int:
    """Write a checkpoint one step after ``run``'s latest, its generators' weights moved by ``shift``; return
    its step."""
    from safetensors.torch import save_file

    from synthmed.io import sha256_file
    from synthmed.training.checkpoint import latest_checkpoint, load_checkpoint

    record, tensors = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    step = record["step"] + 1
    weights = run / "checkpoints" / f"step_{step:08d}.safetensors"
    save_file({key: value + shift if key.startswith("net/G") and value.is_floating_point() else value
               for key, value in tensors.items()}, str(weights))
    record.update(step=step, weights=weights.name, sha256=sha256_file(weights))
    weights.with_suffix(".json").write_text(json.dumps(record))
    return step


def test_the_least_recently_used_model_is_dropped_beyond_three_runs(cache_client: tuple[TestClient, dict],
                                                                     loads: list[str]) -> None:
    client, ids = cache_client
    assert MAX_MODELS == 3 and sorted(ids) == ["a1", "a2", "a3", "c"]
    for name in ("a1", "a2", "a3", "a1"):  # a1 again: cached, and now the most recently used
        get_png(client, ids[name], "seeds=1,2&t=0.5")
    assert loads == ["a1", "a2", "a3"]
    for name in ("c", "a1", "a3", "c"):  # c is a fourth run: a2, the least recently used then, is dropped
        get_png(client, ids[name], "seeds=1,2&t=0.5")
    assert loads == ["a1", "a2", "a3", "c"]
    get_png(client, ids["a2"], "seeds=1,2&t=0.5")  # loaded again; a1 (least recently used now) is dropped
    get_png(client, ids["a3"], "seeds=1,2&t=0.5")
    get_png(client, ids["a1"], "seeds=1,2&t=0.5")
    assert loads == ["a1", "a2", "a3", "c", "a2", "a1"]


def test_a_newer_checkpoint_in_a_cached_run_is_loaded_by_the_next_request(cache_client: tuple[TestClient, dict],
                                                                           cache_root: Path, loads: list[str]
                                                                           ) -> None:
    client, ids = cache_client
    models = client.app.state.latent_models
    before = get_png(client, ids["a1"], "seeds=5,6&t=0")
    assert get_png(client, ids["a1"], "seeds=5,6&t=0") == before and loads == ["a1"]  # from the cache
    assert models._models[ids["a1"]][1].step == 4
    step = newer_checkpoint(cache_root / "a1", shift=0.05)
    after = get_png(client, ids["a1"], "seeds=5,6&t=0")
    assert loads == ["a1", "a1"] and models._models[ids["a1"]][1].step == step == 5
    newest = synthmed.load(cache_root / "a1", device="cpu")
    assert newest.step == 5 and after == image_png(newest.generate(noise(5)[None])) and after != before


def test_concurrent_requests_for_one_run_load_it_once_and_all_succeed(cache_root: Path, loads: list[str]) -> None:
    settings = WebSettings(root=cache_root, database=cache_root.parent / "web.sqlite3", organiser_token=TOKEN)
    seeds = range(8)
    with thread_server(settings) as (base_url, _app):
        lister = Client(base_url)
        run = {r["name"]: r["id"] for r in lister.json("GET", "/api/latent/runs", TOKEN)}["a1"]
        lister.close()
        start = threading.Barrier(len(seeds))

        def fetch(seed: int) -> tuple[int, bytes]:
            client = Client(base_url)
            try:
                start.wait(timeout=30)
                return client.request("GET", f"/api/latent/{run}/image.png?seeds={seed},99&t=0", TOKEN)
            finally:
                client.close()

        with ThreadPoolExecutor(len(seeds)) as pool:
            answers = list(pool.map(fetch, seeds))
    assert loads == ["a1"]
    model = synthmed.load(cache_root / "a1", device="cpu")
    assert answers == [(200, image_png(model.generate(noise(seed)[None]))) for seed in seeds]
