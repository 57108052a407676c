"""The server's SQLite database (the path the organiser chooses): WAL, and every write committed at once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from synthmed.errors import DataError
from synthmed.web.security import new_token

_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def open_database(path: str | Path) -> sqlite3.Connection:
    """A connection to the database at ``path`` (created with its folder when missing), in WAL mode.

    ``synchronous=FULL``: a committed answer survives the server being killed and the machine losing power;
    ``busy_timeout``: concurrent writers wait for each other instead of failing. One connection per thread
    (``check_same_thread`` stays on): open one per request or per worker.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute(_META)
    except (OSError, sqlite3.Error) as exc:
        raise DataError(path, f"cannot open the database: {exc}") from None
    return conn


def organiser_token(conn: sqlite3.Connection, override: str | None = None) -> str:
    """The organiser token kept in the database (made on first use, so printed links survive restarts);
    ``override`` replaces it."""
    if override is not None:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('organiser_token', ?)", (override,))
        return override
    row = conn.execute("SELECT value FROM meta WHERE key = 'organiser_token'").fetchone()
    if row:
        return str(row[0])
    token = new_token()
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('organiser_token', ?)", (token,))
    return str(conn.execute("SELECT value FROM meta WHERE key = 'organiser_token'").fetchone()[0])
