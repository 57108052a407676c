"""Running the web app: settings from the command line, the organiser link printed, uvicorn serving."""

from __future__ import annotations

import socket
from pathlib import Path

from synthmed.errors import ConfigError, DataError
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


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def serve(settings: WebSettings, port: int = 8000, log_level: str = "warning") -> None:
    """Serve until interrupted; prints the organiser link (the only way in besides the token in the database)."""
    import uvicorn

    if not port_free(settings.host, port):
        raise ConfigError(f"port {port} on {settings.host} is in use; choose another with --port")
    app = create_app(settings)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    print(f"synthmed serve: runs under {settings.root}, studies in {settings.database}", flush=True)
    print(f"organiser link (keep it private): http://{shown}:{port}/?token={app.state.organiser_token}", flush=True)
    uvicorn.run(app, host=settings.host, port=port, log_level=log_level, access_log=False)
