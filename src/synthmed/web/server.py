"""Running the web app: settings from the command line, the organiser link printed, uvicorn serving."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from synthmed.errors import ConfigError, DataError, one_line
from synthmed.web.app import WebSettings, create_app


def default_database(root: Path) -> Path:
    """Studies are kept beside the runs unless the organiser names a file: ``ROOT/synthmed-web.sqlite3``."""
    return Path(root) / "synthmed-web.sqlite3"


def check_settings(root: str | Path, database: str | Path | None, source_dirs: list[str | Path] | None,
                   port: int, host: str = "127.0.0.1") -> WebSettings:
    """Settings from the command line, each problem a one-line error naming the path or option."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "--root must be an existing folder of runs")
    for folder in source_dirs or ():
        if not Path(folder).is_dir():
            raise DataError(folder, "--source-dir must be an existing folder")
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535 (got {port})")
    database = Path(database) if database is not None else default_database(root)
    if database.is_dir():
        raise DataError(database, "--db must be a file path, not a folder")
    return WebSettings(root=root, database=database, source_dirs=tuple(Path(p) for p in source_dirs or ()),
                       host=host)


def bind_problem(host: str, port: int) -> OSError | None:
    """Why a server could not listen on ``host``:``port`` (a name that does not resolve, an address that is not
    this machine's, a port in use...), or ``None`` when it can. On POSIX the probe sets ``SO_REUSEADDR`` as
    uvicorn's listener does (asyncio's default there), so connections of a server just stopped, still in TIME_WAIT,
    do not make its port look busy; on Windows that option would let it bind a port in use."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        if os.name == "posix":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None


def check_bindable(host: str, port: int) -> None:
    """A one-line :class:`ConfigError` when ``host``:``port`` cannot be bound; "in use" only when it is.

    Args:
        host: The address or name given to ``--host``.
        port: The port given to ``--port``.
    """
    problem = bind_problem(host, port)
    if problem is None:
        return
    if problem.errno == errno.EADDRINUSE:
        raise ConfigError(f"port {port} on {host} is in use; choose another with --port")
    raise ConfigError(f"cannot bind --host {host} port {port}: {one_line(problem.strerror or problem)}")


def default_threads() -> int:
    """torch's threads for a server: at most 4, since it shares the machine and each request's work (one small
    image, a toy GAN step) gains little from more."""
    return min(4, os.cpu_count() or 1)


def serve(settings: WebSettings, port: int = 8000, log_level: str = "warning", threads: int | None = None) -> None:
    """Serve until interrupted; prints the organiser link (the only way in besides the token in the database).

    Args:
        settings: What :func:`check_settings` made of the command line.
        port: The TCP port to listen on.
        log_level: uvicorn's log level.
        threads: torch's intra-op threads for the whole process, set once here before serving (requests never
            change them: a setting made in one worker thread would leak into others) [default:
            :func:`default_threads`].
    """
    import torch
    import uvicorn

    threads = default_threads() if threads is None else threads
    if threads < 1:
        raise ConfigError(f"threads must be at least 1 (got {threads})")
    check_bindable(settings.host, port)
    torch.set_num_threads(threads)
    app = create_app(settings)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    print(f"synthmed serve: runs under {settings.root}, studies in {settings.database}", flush=True)
    print(f"organiser link (keep it private): http://{shown}:{port}/?token={app.state.organiser_token}", flush=True)
    uvicorn.run(app, host=settings.host, port=port, log_level=log_level, access_log=False)
