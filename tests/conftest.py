"""Shared test setup: import ``synthmed`` from ``src/`` so the tests run without installing the package."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module's tests: networks this small gain nothing from threads, and the machine's
    cores are shared. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Browser tests (tests/test_web_browser.py) drive Debian's Chromium through pytest-playwright, which has no option for
# an executable path: its launch arguments are overridden here. `playwright install` is never run (it downloads a
# browser build); .ci/run installs the chromium package, and without it the browser tests skip with the reason.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:  # overrides pytest-playwright's fixture
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "headless": True,
            "args": [*browser_type_launch_args.get("args", []), *CHROMIUM_FLAGS]}
