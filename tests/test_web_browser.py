"""End-to-end tests of ``synthmed serve`` in a real headless browser (Debian's Chromium through Playwright).

A reader completes a 10-image Turing test and the organiser sees the accuracy; the latent slider changes the image;
GAN Lab plays 50 steps and its loss chart grows. The pages run under the app's own Content-Security-Policy, so
the tests use locators and clicks only (no script evaluation, which the policy forbids).
"""

from __future__ import annotations

import re
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs synthmed[web] (pip install '.[dev]')")
pytest.importorskip("pytest_playwright", reason="browser tests need playwright and pytest-playwright (dev extras)")

from playwright.sync_api import Page, expect  # noqa: E402

import synthmed  # noqa: E402
from synthmed.web import study_store  # noqa: E402
from synthmed.web.app import WebSettings  # noqa: E402
from webserver import thread_server  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_RUN = {"steps": 4, "g_channels": 8, "d_channels": 8, "latent_dim": 16, "batch_size": 16, "progress": False,
            "sample_every": 2, "checkpoint_every": 1000}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path, Path]]:
    """``(base_url, organiser_token, root, database)``: a root with a tiny run and two npz sources."""
    root = tmp_path_factory.mktemp("browser-root")
    synthmed.train(out=root / "tiny", **TINY_RUN)
    rng = np.random.default_rng(1)
    np.savez(root / "real.npz", images=rng.integers(150, 250, (8, 16, 16), dtype=np.uint8))
    np.savez(root / "synthetic.npz", images=rng.integers(10, 110, (8, 16, 16), dtype=np.uint8))
    database = root / "web.sqlite3"
    with thread_server(WebSettings(root=root, database=database)) as (base_url, app):
        yield base_url, app.state.organiser_token, root, database


def truths_in_reader_order(database: Path, token: str) -> list[str]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT items.truth FROM readers JOIN reader_items ON reader_items.reader_id = readers.id "
                            "JOIN items ON items.id = reader_items.item_id WHERE readers.token = ? "
                            "ORDER BY reader_items.position", (token,)).fetchall()
    return [truth for (truth,) in rows]


def test_a_reader_completes_a_ten_image_study_and_the_organiser_sees_the_accuracy(server, page: Page) -> None:
    base_url, organiser, root, database = server
    study = study_store.create_study(database, "browser study", "real.npz", "synthetic.npz", 5, ["reader one"], 7,
                                     allowed_dirs=[root], real_split="all")
    reader = study.readers[0].token
    truths = truths_in_reader_order(database, reader)
    assert len(truths) == 10 and truths.count("real") == 5
    other = {"real": "synthetic", "synthetic": "real"}
    answers = [truth if position < 7 else other[truth] for position, truth in enumerate(truths)]  # 7 of 10 right

    page.goto(f"{base_url}/read/{reader}")
    for position, answer in enumerate(answers):
        expect(page.locator(f'#study-image[data-loaded="true"][data-position="{position}"]')).to_be_visible()
        expect(page.locator("#progress")).to_contain_text(f"{position + 1} / 10")
        page.click(f"#answer-{answer}")
        page.check(f'input[name=confidence][value="{1 + position % 5}"]')
        page.click("#submit-answer")
    expect(page.locator("#done")).to_be_visible()
    with sqlite3.connect(database) as conn:
        stored = conn.execute("SELECT answer, confidence FROM answers JOIN readers ON readers.id = answers.reader_id "
                              "WHERE readers.token = ? ORDER BY position", (reader,)).fetchall()
    assert stored == [(answer, 1 + position % 5) for position, answer in enumerate(answers)]

    page.goto(f"{base_url}/studies?token={organiser}")
    page.click(f"#study-list >> text={study.name}")
    accuracy = page.locator("#pooled-accuracy")
    expect(accuracy).to_have_attribute("data-value", re.compile(r"^0\.7(0*)$"))
    expect(accuracy).to_contain_text("70")


def test_the_study_page_refuses_a_reader(server, page: Page) -> None:
    base_url, _, root, database = server
    study = study_store.create_study(database, "no peeking", "real.npz", "synthetic.npz", 2, 1, 1,
                                     allowed_dirs=[root], real_split="all")
    response = page.goto(f"{base_url}/studies?token={study.readers[0].token}")
    assert response is not None and response.status == 403
    expect(page.locator("body")).not_to_contain_text("no peeking")


def image_bytes(base_url: str, src: str, organiser: str) -> bytes:
    request = urllib.request.Request(base_url + src if src.startswith("/") else src,
                                     headers={"X-Synthmed-Token": organiser})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def test_the_latent_slider_changes_the_image(server, page: Page) -> None:
    base_url, organiser, _, _ = server
    page.goto(f"{base_url}/explore?token={organiser}")
    image = page.locator("#latent-image")
    expect(image).to_have_attribute("src", re.compile(r"t=0(\.0+)?(&|$)"))
    before = image.get_attribute("src")
    page.locator("#latent-t").focus()
    page.keyboard.press("End")  # the slider to t = 1, as a user's keyboard would
    expect(image).not_to_have_attribute("src", before)
    after = image.get_attribute("src")
    assert "t=1" in after
    assert image_bytes(base_url, before, organiser) != image_bytes(base_url, after, organiser)


def test_gan_lab_plays_fifty_steps_and_its_charts_update(server, page: Page) -> None:
    base_url, organiser, _, _ = server
    page.goto(f"{base_url}/ganlab?token={organiser}")
    counter = page.locator("#ganlab-step-count")
    expect(counter).to_have_text(re.compile(r"^\D*0\D*$"))
    chart = page.locator("#ganlab-loss-chart")
    picture_before = page.locator("#ganlab-canvas").screenshot()
    page.click("#ganlab-play")
    deadline = time.monotonic() + 60
    while int(re.sub(r"\D", "", counter.inner_text()) or 0) < 50:
        assert time.monotonic() < deadline, "GAN Lab did not reach 50 steps in 60 s"
        page.wait_for_timeout(100)
    page.click("#ganlab-play")  # pause
    steps = int(re.sub(r"\D", "", counter.inner_text()))
    assert steps >= 50
    expect(chart).to_have_attribute("data-points", re.compile(r"^\d+$"))
    assert int(chart.get_attribute("data-points")) >= 2 * 50  # loss_d and loss_g, one point per step
    assert page.locator("#ganlab-canvas").screenshot() != picture_before
