"""`synthmed serve` before it serves (synthmed.web.server): why an address cannot be bound, in one line, and the
process's torch threads set once from ``threads``."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web app needs synthmed[web] (pip install '.[dev]')")
pytest.importorskip("uvicorn", reason="the web app needs synthmed[web] (pip install '.[dev]')")

import torch  # noqa: E402
import uvicorn  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from synthmed.cli import app as cli_app  # noqa: E402
from synthmed.web import server  # noqa: E402
from synthmed.web.app import WebSettings  # noqa: E402
from webserver import free_port  # noqa: E402

runner = CliRunner()


def serve_output(*arguments: str) -> tuple[int, str]:
    result = runner.invoke(cli_app, ["serve", *arguments])
    return result.exit_code, result.output


def test_a_host_that_is_not_this_machines_cannot_be_bound_and_is_not_called_a_busy_port(tmp_path: Path) -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this machine.
    code, output = serve_output("--root", str(tmp_path), "--host", "192.0.2.1", "--port", "8123")
    assert code == 2
    assert output.strip() == "synthmed: error: cannot bind --host 192.0.2.1 port 8123: Cannot assign requested address"
    assert "in use" not in output
    assert not (tmp_path / "synthmed-web.sqlite3").exists()  # nothing written for a server that never started


def test_a_busy_port_is_said_to_be_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, output = serve_output("--root", str(tmp_path), "--port", str(port))
    assert code == 2
    assert output.strip() == f"synthmed: error: port {port} on 127.0.0.1 is in use; choose another with --port"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[WebSettings, list[int], list[dict]]:
    """Settings for a free port, and records of torch.set_num_threads and uvicorn.run calls (neither happens)."""
    thread_calls: list[int] = []
    runs: list[dict] = []
    monkeypatch.setattr(torch, "set_num_threads", thread_calls.append)
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: runs.append(options))
    return WebSettings(root=tmp_path, database=tmp_path / "web.sqlite3"), thread_calls, runs


def test_serve_sets_torch_threads_once_before_serving(served: tuple[WebSettings, list[int], list[dict]]) -> None:
    settings, thread_calls, runs = served
    port = free_port()
    server.serve(settings, port=port, threads=3)
    assert thread_calls == [3]
    assert len(runs) == 1 and (runs[0]["host"], runs[0]["port"]) == ("127.0.0.1", port)


@pytest.mark.parametrize(("cores", "expected"), [(16, 4), (2, 2), (None, 1)])
def test_serve_uses_at_most_four_threads_by_default(served: tuple[WebSettings, list[int], list[dict]],
                                                    monkeypatch: pytest.MonkeyPatch, cores: int | None,
                                                    expected: int) -> None:
    settings, thread_calls, _runs = served
    monkeypatch.setattr(server.os, "cpu_count", lambda: cores)
    server.serve(settings, port=free_port())
    assert thread_calls == [expected]


def test_serve_refuses_fewer_than_one_thread(served: tuple[WebSettings, list[int], list[dict]]) -> None:
    settings, thread_calls, runs = served
    with pytest.raises(server.ConfigError, match="threads must be at least 1"):
        server.serve(settings, port=free_port(), threads=0)
    assert thread_calls == [] and runs == []


@pytest.mark.skipif(sys.platform != "linux", reason="TIME_WAIT's hold on a port is Linux's behaviour here")
def test_a_port_held_only_by_a_stopped_servers_closed_connections_is_free(
        served: tuple[WebSettings, list[int], list[dict]]) -> None:
    settings, _thread_calls, runs = served
    with socket.socket() as listener:  # a server as uvicorn listens (SO_REUSEADDR), closing a connection first
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _address = listener.accept()
            accepted.close()  # the server's side closes first, so its port is left in TIME_WAIT
            assert client.recv(1) == b""
    server.serve(settings, port=port)
    assert [r["port"] for r in runs] == [port]
