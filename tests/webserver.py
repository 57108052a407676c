"""Real servers for the web tests: uvicorn in a thread (fast) or in a child process (for kill -9), on loopback."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

pytest.importorskip("fastapi", reason="the web app needs synthmed[web] (pip install '.[dev]')")
pytest.importorskip("uvicorn", reason="the web app needs synthmed[web] (pip install '.[dev]')")

import uvicorn  # noqa: E402

from synthmed.web.app import WebSettings, create_app  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


class Client:
    """One keep-alive HTTP/1.1 connection, JSON in and out, the token in the header as the pages send it."""

    def __init__(self, base_url: str, timeout: float = 120) -> None:
        parts = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def request(self, method: str, path: str, token: str | None = None, body: dict | None = None
                ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["X-Synthmed-Token"] = token
        self.connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def json(self, method: str, path: str, token: str | None = None, body: dict | None = None) -> Any:
        status, data = self.request(method, path, token, body)
        if status >= 300:
            raise AssertionError(f"{method} {path}: {status} {data[:200]!r}")
        return json.loads(data)

    def close(self) -> None:
        self.connection.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(base_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def thread_server(settings: WebSettings) -> Iterator[tuple[str, object]]:
    """``(base_url, app)`` of the app for ``settings`` served by uvicorn in a thread until the block ends."""
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base_url)
        yield base_url, app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def process_server(root: Path, database: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``(base_url, process)`` of ``synthmed serve`` in a child process (the test may kill it with SIGKILL)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "synthmed", "serve", "--root", str(root), "--db",
                                str(database), "--port", str(port), *extra],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base_url)
        yield base_url, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if process.stdout:
            process.stdout.close()
