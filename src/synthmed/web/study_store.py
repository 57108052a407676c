"""The visual Turing test's SQLite store: studies, their images (PNG), readers, each reader's order, answers.

One connection per call, closed after it; every answer is committed before the call returns (the database runs in
WAL mode with ``synchronous=FULL``, :func:`synthmed.web.db.open_database`), so an answer acknowledged to a reader
survives the server being killed.

The reader side is addressed by reader token and position only: a reader never sees item ids, sources or truth,
and nothing they can see predicts them: each reader's order is drawn from the operating system's random source (not
from the study's seed, which a reader could guess), and every image of a study is an uncompressed PNG of the same
byte length (compressed, the length alone hinted at the answer).
Every problem a caller can cause raises :class:`StudyError` with an HTTP status and a one-line message; a database
another writer keeps locked past :data:`BUSY_TIMEOUT_MS` is a 503.
"""

from __future__ import annotations

import csv
import io
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.errors import SynthmedError, one_line
from synthmed.web.db import open_database
from synthmed.web.images import png_bytes
from synthmed.web.security import ID_PATTERN, TOKEN_PATTERN, new_token

TRUTHS = ("real", "synthetic")
CONFIDENCE_LEVELS = 5
SPLITS = ("train", "val", "test", "all")
# Creating a study writes n_items x readers order rows under the write lock, which every answer waits for: these
# bound one request to 2000 x 100 rows (a fraction of a second), not minutes.
MAX_PER_CLASS = 1000
MAX_READERS = 100  # per request: more can be added in later requests
MAX_NAME = 200
MAX_POSITION = 2**31 - 1  # SQLite stores up to 2**63 - 1; far fewer images than this fit in a study anyway
BUSY_TIMEOUT_MS = 30_000  # how long a write waits for another writer's lock before a 503 (tests make it short)
BUSY_MESSAGE = "the study database is busy; try again"
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
NAMED_SOURCES = ("breastmnist",)
_SLUG_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l: slugs are read aloud and typed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    n_per_class INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    real_source TEXT NOT NULL,
    synthetic_source TEXT NOT NULL,
    image_size INTEGER NOT NULL,
    image_mode TEXT NOT NULL,
    notes TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    study_id TEXT NOT NULL REFERENCES studies(id),
    ordinal INTEGER NOT NULL,
    truth TEXT NOT NULL CHECK (truth IN ('real', 'synthetic')),
    png BLOB NOT NULL,
    source_index INTEGER NOT NULL,
    UNIQUE (study_id, ordinal)
);
CREATE TABLE IF NOT EXISTS readers (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    study_id TEXT NOT NULL REFERENCES studies(id),
    ordinal INTEGER NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (study_id, name),
    UNIQUE (study_id, ordinal)
);
CREATE TABLE IF NOT EXISTS reader_items (
    reader_id INTEGER NOT NULL REFERENCES readers(id),
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL REFERENCES items(id),
    PRIMARY KEY (reader_id, position)
);
CREATE TABLE IF NOT EXISTS answers (
    reader_id INTEGER NOT NULL REFERENCES readers(id),
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL REFERENCES items(id),
    answer TEXT NOT NULL CHECK (answer IN ('real', 'synthetic')),
    confidence INTEGER NOT NULL CHECK (confidence BETWEEN 1 AND 5),
    answered_at TEXT NOT NULL,
    response_ms INTEGER,
    PRIMARY KEY (reader_id, position)
);
CREATE INDEX IF NOT EXISTS items_by_study ON items (study_id);
CREATE INDEX IF NOT EXISTS readers_by_study ON readers (study_id);
"""


class StudyError(SynthmedError):
    """A request the store refuses: ``status`` is the HTTP status to answer with, the message one line."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class ReaderLink:
    """A reader of a study: the name the organiser sees and the private token of their link."""

    name: str
    token: str


@dataclass(frozen=True)
class Study:
    """A study as created: its record and its readers' links."""

    id: str
    name: str
    created_at: str
    n_per_class: int
    seed: int
    real_source: str
    synthetic_source: str
    image_size: int
    image_mode: str
    notes: str
    readers: tuple[ReaderLink, ...]


@dataclass(frozen=True)
class _Images:
    """Images taken from one source: (N, C, H, W) in [-1, 1], the source rows they came from, a description."""

    images: torch.Tensor
    indices: list[int]
    description: str


# ---------------------------------------------------------------------------------------------------- database


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite gave up waiting for a lock (SQLITE_BUSY/LOCKED), as opposed to a real failure (disk, schema)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)  # extended codes keep the primary in the low byte
    return "locked" in str(exc) or "busy" in str(exc)


@contextmanager
def _connect(database: str | Path) -> Iterator[sqlite3.Connection]:
    """One connection for one call, with the schema in place; closed after. A lock held past
    :data:`BUSY_TIMEOUT_MS` is a one-line 503 (the caller may retry), not a bare ``database is locked``."""
    try:
        with closing(open_database(database)) as conn:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_MS)}")
            _ensure_schema(conn)
            yield conn
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise StudyError(503, BUSY_MESSAGE) from None
        raise


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error.

    Writers of this process queue on a lock per database first: SQLite's own busy handler sleeps with growing
    back-off, so under 50 readers at once some answers waited seconds behind later ones; the lock hands the
    database over as soon as a commit ends. Other processes still meet SQLite's lock (and the busy timeout)."""
    with _writer_lock(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


_WRITER_LOCKS: dict[str, threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


def _database_file(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA database_list").fetchone()[2])


def _writer_lock(conn: sqlite3.Connection) -> threading.Lock:
    key = _database_file(conn)
    with _REGISTRY_LOCK:
        return _WRITER_LOCKS.setdefault(key, threading.Lock())


def _ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the tables when the database lacks them (not on every connection: the script takes write locks)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'answers'").fetchone():
        return
    with _writer_lock(conn):
        conn.executescript(_SCHEMA)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _slug() -> str:
    return "".join(secrets.choice(_SLUG_ALPHABET) for _ in range(8))


def _study_row(conn: sqlite3.Connection, study_id: str) -> sqlite3.Row:
    if not isinstance(study_id, str) or not ID_PATTERN.match(study_id):
        raise StudyError(404, "no such study")
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT * FROM studies WHERE id = ?", (study_id,)).fetchone()
    if row is None:
        raise StudyError(404, "no such study")
    return row


def _reader_row(conn: sqlite3.Connection, token: str) -> sqlite3.Row:
    """The reader holding ``token``; one 404 for malformed and unknown tokens alike (nothing about studies)."""
    if not isinstance(token, str) or not TOKEN_PATTERN.match(token):
        raise StudyError(404, "no such reader link")
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT id, study_id, name, ordinal FROM readers WHERE token = ?", (token,)).fetchone()
    if row is None:
        raise StudyError(404, "no such reader link")
    return row


# ------------------------------------------------------------------------------------------------------ sources


def resolve_source(source: str, allowed_dirs: Sequence[Path], what: str) -> str | Path:
    """A named source (``breastmnist``, ``medmnist:NAME``) as given, or a path inside one of ``allowed_dirs``.

    Relative paths are taken from the first allowed folder (the runs folder). Symbolic links are followed before
    the check, so a link inside the folder that points outside it is refused too.

    Args:
        source: What the organiser typed.
        allowed_dirs: The runs folder first, then the further source folders.
        what: ``"real"`` or ``"synthetic"``, for the messages.
    """
    text = source.strip() if isinstance(source, str) else ""
    if not text:
        raise StudyError(400, f"{what}: a source is required (a folder, an .npz file, a run or medmnist:NAME)")
    if text.lower() in NAMED_SOURCES or text.lower().startswith("medmnist:"):
        return text.lower()
    if "\x00" in text:
        raise StudyError(400, f"{what}: NULs are not accepted in paths")
    allowed = [Path(d).resolve() for d in allowed_dirs]
    path = Path(text)
    if not path.is_absolute():
        path = allowed[0] / path
    resolved = path.resolve()
    if not _inside(resolved, allowed):
        raise StudyError(403, f"{text}: {what} source is outside the runs folder and every --source-dir")
    if not resolved.exists():
        raise StudyError(400, f"{text}: no such file or folder ({what} source)")
    if _is_run(resolved):
        _check_run_inside(resolved, allowed, text)
    return resolved


def _inside(resolved: Path, allowed: Sequence[Path]) -> bool:
    return any(resolved == d or resolved.is_relative_to(d) for d in allowed)


def _check_run_inside(run_dir: Path, allowed: Sequence[Path], text: str) -> None:
    """A run inside the allowed folders whose config or checkpoints link out of them is refused like any outside
    path: loading it would read (and hash) files the organiser did not open to the server."""
    if not _inside((run_dir / "config.yaml").resolve(), allowed):
        raise StudyError(403, f"{text}: the run's config.yaml is outside the runs folder and every --source-dir")
    checkpoints = run_dir / "checkpoints"
    files = list(checkpoints.iterdir()) if checkpoints.is_dir() else []
    if not all(_inside(path.resolve(), allowed) for path in (checkpoints, *files)):
        raise StudyError(403, f"{text}: the run's checkpoints are outside the runs folder and every --source-dir")


def _is_run(source: str | Path) -> bool:
    return isinstance(source, Path) and source.is_dir() and (source / "config.yaml").is_file()


def _from_run(run_dir: Path, n: int, seed: int) -> _Images:
    from synthmed.api import load

    model = load(run_dir, device="cpu")  # a study needs a few samples; the GPU, if any, is left to training
    images = model.sample(n, seed=seed).detach().float().cpu()
    return _Images(images, list(range(n)), f"run {run_dir} (step {model.step}): {n} samples, seed {seed}"
                   + (", classes in turn" if model.conditional else ""))


def _from_dataset(source: str | Path, n: int, seed: int, split: str, what: str) -> _Images:
    from synthmed.data import load_dataset

    dataset = load_dataset(source, split=split)
    if dataset.images.ndim != 4:
        raise StudyError(400, f"{source}: {what} images must be 2-D (got shape {tuple(dataset.images.shape)})")
    if len(dataset) < n:
        raise StudyError(400, f"{source}: {what} source has {len(dataset)} images in split '{split}', "
                              f"fewer than the {n} per class asked for")
    rng = np.random.default_rng([seed, TRUTHS.index(what)])
    indices = sorted(int(i) for i in rng.choice(len(dataset), size=n, replace=False))
    return _Images(dataset.images[indices].float(), indices,
                   f"{source} (split {split}): {n} of {len(dataset)} images, seeded choice (seed {seed})")


def load_images(source: str | Path, n: int, seed: int, split: str, what: str) -> _Images:
    """``n`` images of one (already resolved) source: a run's samples or a seeded choice from a dataset."""
    try:
        if _is_run(source):
            return _from_run(Path(source), n, seed)
        return _from_dataset(source, n, seed, split, what)
    except StudyError:
        raise
    except (SynthmedError, OSError, ValueError, KeyError) as exc:
        raise StudyError(400, f"{what} source: {one_line(exc, 300)}") from None


def _to_mode(images: torch.Tensor, mode: str) -> torch.Tensor:
    """Images as grey (``L``, one channel) or ``RGB`` (three), so both classes have the same PNG colour type."""
    channels = images.shape[1]
    if mode == "L":
        if channels == 3:  # ITU-R 601 luma, as PIL converts RGB to L
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            return (images * weights).sum(1, keepdim=True)
        return images[:, :1]
    if channels == 3:
        return images
    return images[:, :1].repeat(1, 3, 1, 1)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-2:] == (size, size):
        return images
    resized = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                                              antialias=True)
    return resized.clamp(-1.0, 1.0)


def _colour_type(images: torch.Tensor) -> str:
    return "RGB" if images.shape[1] == 3 else "L"


def _harmonise(real: torch.Tensor, synthetic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, str, list[str]]:
    """Both sets in the real source's size and one colour type, so neither size nor colour gives the answer away.

    When the colour types differ both sets are shown in grey: grey images repeated to R = G = B beside coloured
    ones would leave every coloured image plainly real (or plainly synthetic).
    """
    notes: list[str] = []
    size = int(real.shape[-1])
    if real.shape[-2] != real.shape[-1]:
        real = _resize(real, size)
        notes.append(f"real images resized to {size}x{size} px")
    real_type, synthetic_type = _colour_type(real), _colour_type(synthetic)
    mode = real_type if real_type == synthetic_type else "L"
    if real.shape[1] not in (1, 3):
        notes.append(f"real images have {real.shape[1]} channels: the first is shown, in grey")
    if real_type == "RGB" and synthetic_type != "RGB":
        other = "grey" if synthetic.shape[1] == 1 else f"have {synthetic.shape[1]} channels"
        notes.append(f"real images are in colour and synthetic ones {other}: both are shown in grey (L), so colour "
                     "does not give the answer away")
    elif synthetic.shape[1] != real.shape[1]:
        notes.append(f"synthetic images converted from {synthetic.shape[1]} channel(s) to {mode}")
    if tuple(synthetic.shape[-2:]) != (size, size):
        notes.append(f"synthetic images resized from {synthetic.shape[-2]}x{synthetic.shape[-1]} to {size}x{size} "
                     "px (the real source's size)")
    return _to_mode(real, mode), _resize(_to_mode(synthetic, mode), size), size, mode, notes


# -------------------------------------------------------------------------------------------------------- input


def _check_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise StudyError(400, f"{name} must be a whole number from {low} to {high} (got {value!r:.40})")
    return value


def _check_name(value: Any, what: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    # isprintable() refuses every control and separator but the space (U+2028, U+0085 and DEL too), so names stay on
    # one line in the page, the CSV and the logs.
    if not text or len(text) > MAX_NAME or not text.isprintable():
        raise StudyError(400, f"{what} must be 1 to {MAX_NAME} printable characters")
    return text


def reader_names(readers: Any, first: int = 1) -> list[str]:
    """Reader names from a count (``reader 1``, ``reader 2``, ...) or a list of names (no duplicates).

    Args:
        readers: A whole number or a list of names.
        first: The number of the first generated name (readers added later continue the numbering).
    """
    if isinstance(readers, int) and not isinstance(readers, bool):
        count = _check_int(readers, "readers", 1, MAX_READERS)
        return [f"reader {first + i}" for i in range(count)]
    if isinstance(readers, list) and 0 < len(readers) <= MAX_READERS:
        names = [_check_name(name, "a reader's name") for name in readers]
        if len(set(names)) != len(names):
            raise StudyError(400, "reader names must differ from each other")
        return names
    raise StudyError(400, f"readers must be a count (1 to {MAX_READERS}) or a list of 1 to {MAX_READERS} names")


# ------------------------------------------------------------------------------------------------------ studies


def create_study(database: str | Path, name: str, real: str, synthetic: str, n_per_class: int, readers: Any,
                 seed: int, allowed_dirs: Sequence[Path], real_split: str = "test") -> Study:
    """Load ``n_per_class`` images from each source, store them as PNG, and make one link per reader.

    Every image is stored in the real source's size and colour type (8-bit, no metadata), so nothing but the
    pixels tells the classes apart; the study record says what was resized or converted.

    Args:
        database: The SQLite file.
        name: The study's name (organiser and readers see it).
        real: A folder, an .npz, a run directory, ``breastmnist`` or ``medmnist:NAME``; ``real_split`` is read.
        synthetic: The same kinds; a run is sampled (classes in turn), a folder or .npz is read whole.
        n_per_class: Images of each kind (real, synthetic), 1 to :data:`MAX_PER_CLASS`.
        readers: How many readers, or their names (1 to :data:`MAX_READERS`).
        seed: Seeds the choice of images and the samples of a run. Readers' orders are random, not seeded: a reader
            who knew the seed could otherwise compute which position holds a real image.
        allowed_dirs: The runs folder, then further folders sources may come from.
        real_split: The real source's split (``test`` by default: images no GAN was trained on).
    """
    name = _check_name(name, "the study's name")
    n_per_class = _check_int(n_per_class, "n_per_class", 1, MAX_PER_CLASS)
    seed = _check_int(seed, "seed", 0, 2**31 - 1)
    if real_split not in SPLITS:
        raise StudyError(400, f"real_split must be one of {', '.join(SPLITS)} (got {real_split!r:.40})")
    names = reader_names(readers)
    real_source = resolve_source(real, allowed_dirs, "real")
    synthetic_source = resolve_source(synthetic, allowed_dirs, "synthetic")
    real_set = load_images(real_source, n_per_class, seed, real_split, "real")
    synthetic_set = load_images(synthetic_source, n_per_class, seed, "all", "synthetic")
    real_images, synthetic_images, size, mode, notes = _harmonise(real_set.images, synthetic_set.images)
    # Stored, not compressed: every PNG of the study is then the same length, which a reader sees before the pixels.
    pngs = [png_bytes(image, compress_level=0) for image in (*real_images, *synthetic_images)]
    truths = ["real"] * n_per_class + ["synthetic"] * n_per_class
    sources = real_set.indices + synthetic_set.indices
    with _connect(database) as conn, _transaction(conn):
        study_id = _free_slug(conn)
        created = _now()
        conn.execute("INSERT INTO studies (id, name, created_at, n_per_class, seed, real_source, synthetic_source, "
                     "image_size, image_mode, notes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (study_id, name, created, n_per_class, seed, real_set.description, synthetic_set.description,
                      size, mode, "; ".join(notes)))
        conn.executemany("INSERT INTO items (id, study_id, ordinal, truth, png, source_index) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         [(secrets.token_hex(8), study_id, i, truths[i], pngs[i], sources[i])
                          for i in range(len(pngs))])
        links = _insert_readers(conn, study_id, names)
    return Study(study_id, name, created, n_per_class, seed, real_set.description, synthetic_set.description, size,
                 mode, "; ".join(notes), tuple(links))


def _free_slug(conn: sqlite3.Connection) -> str:
    while True:
        slug = _slug()
        if conn.execute("SELECT 1 FROM studies WHERE id = ?", (slug,)).fetchone() is None:
            return slug


def _insert_readers(conn: sqlite3.Connection, study_id: str, names: list[str]) -> list[ReaderLink]:
    """New readers, each with their own order of the study's items, stored so it never changes once made.

    The order comes from 128 bits of the operating system's random source, never from the study's seed and the
    reader's number: items 0..n-1 are the real ones, so a seeded order would let a reader who guessed the seed
    compute the truth at every position.
    """
    items = [row[0] for row in conn.execute("SELECT id FROM items WHERE study_id = ? ORDER BY ordinal",
                                            (study_id,))]
    taken = {row[0] for row in conn.execute("SELECT name FROM readers WHERE study_id = ?", (study_id,))}
    clash = sorted(taken.intersection(names))
    if clash:
        raise StudyError(409, f"the study already has a reader called {clash[0]!r}")
    first = conn.execute("SELECT COALESCE(MAX(ordinal), -1) + 1 FROM readers WHERE study_id = ?",
                         (study_id,)).fetchone()[0]
    links = []
    for offset, reader_name in enumerate(names):
        ordinal = first + offset
        token = new_token()
        cursor = conn.execute("INSERT INTO readers (token, study_id, ordinal, name, created_at) VALUES (?, ?, ?, ?, ?)",
                              (token, study_id, ordinal, reader_name, _now()))
        order = np.random.default_rng(secrets.randbits(128)).permutation(len(items))
        conn.executemany("INSERT INTO reader_items (reader_id, position, item_id) VALUES (?, ?, ?)",
                         [(cursor.lastrowid, position, items[int(k)]) for position, k in enumerate(order)])
        links.append(ReaderLink(reader_name, token))
    return links


def add_readers(database: str | Path, study_id: str, readers: Any) -> list[ReaderLink]:
    """Add readers to a study (a count continues the ``reader N`` numbering, or a list of new names).

    Args:
        database: The SQLite file.
        study_id: The study.
        readers: How many readers, or their names.
    """
    with _connect(database) as conn, _transaction(conn):
        _study_row(conn, study_id)
        count = conn.execute("SELECT COUNT(*) FROM readers WHERE study_id = ?", (study_id,)).fetchone()[0]
        return _insert_readers(conn, study_id, reader_names(readers, first=count + 1))


def _progress(conn: sqlite3.Connection, study_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT r.name, r.token, r.created_at, "
        "(SELECT COUNT(*) FROM reader_items ri WHERE ri.reader_id = r.id) AS total, "
        "(SELECT COUNT(*) FROM answers a WHERE a.reader_id = r.id) AS answered "
        "FROM readers r WHERE r.study_id = ? ORDER BY r.ordinal", (study_id,)).fetchall()
    return [{"name": r[0], "token": r[1], "created_at": r[2], "total": r[3], "answered": r[4],
             "done": r[4] >= r[3]} for r in rows]


def study_details(database: str | Path, study_id: str) -> dict[str, Any]:
    """The study's record, its items (id, truth) and its readers with their tokens and progress (organiser only).

    Args:
        database: The SQLite file.
        study_id: The study.
    """
    with _connect(database) as conn:
        study = dict(_study_row(conn, study_id))
        items = conn.execute("SELECT id, truth, source_index FROM items WHERE study_id = ? ORDER BY ordinal",
                             (study_id,)).fetchall()
        study["items"] = [{"id": i["id"], "truth": i["truth"], "source_index": i["source_index"]} for i in items]
        study["n_items"] = len(items)
        study["readers"] = _progress(conn, study_id)
        return study


def list_studies(database: str | Path) -> list[dict[str, Any]]:
    """Every study, newest first, with counts of items, readers and answers.

    Args:
        database: The SQLite file.
    """
    with _connect(database) as conn:
        rows = conn.execute(
            "SELECT s.id, s.name, s.created_at, s.n_per_class, s.seed, "
            "(SELECT COUNT(*) FROM items i WHERE i.study_id = s.id), "
            "(SELECT COUNT(*) FROM readers r WHERE r.study_id = s.id), "
            "(SELECT COUNT(*) FROM answers a JOIN readers r ON r.id = a.reader_id WHERE r.study_id = s.id) "
            "FROM studies s ORDER BY s.created_at DESC, s.id").fetchall()
    return [{"id": r[0], "name": r[1], "created_at": r[2], "n_per_class": r[3], "seed": r[4], "n_items": r[5],
             "n_readers": r[6], "n_answers": r[7], "n_expected": r[5] * r[6]} for r in rows]


# ------------------------------------------------------------------------------------------------------ readers


def _reader_state(conn: sqlite3.Connection, reader_id: int) -> dict[str, Any]:
    total = conn.execute("SELECT COUNT(*) FROM reader_items WHERE reader_id = ?", (reader_id,)).fetchone()[0]
    answered = conn.execute("SELECT COUNT(*) FROM answers WHERE reader_id = ?", (reader_id,)).fetchone()[0]
    row = conn.execute("SELECT ri.position FROM reader_items ri LEFT JOIN answers a ON a.reader_id = ri.reader_id "
                       "AND a.position = ri.position WHERE ri.reader_id = ? AND a.position IS NULL "
                       "ORDER BY ri.position LIMIT 1", (reader_id,)).fetchone()
    position = total if row is None else int(row[0])
    return {"position": position, "answered": answered, "total": total, "done": row is None}


def reader_state(database: str | Path, token: str) -> dict[str, Any]:
    """A reader's progress: the next unanswered ``position`` (``total`` when done), ``answered``, ``total``,
    ``done`` and the study's name; never item ids or truth.

    Args:
        database: The SQLite file.
        token: The reader's token.
    """
    with _connect(database) as conn:
        reader = _reader_row(conn, token)
        state = _reader_state(conn, reader["id"])
        study = conn.execute("SELECT name FROM studies WHERE id = ?", (reader["study_id"],)).fetchone()
        return {**state, "study": study[0], "reader": reader["name"]}


def check_position(position: Any, *, in_path: bool = False) -> int:
    """A position in a reader's order, 0 to :data:`MAX_POSITION`: the one check of every route that takes one.

    Bounded so SQLite is never handed a number it cannot store (2**63 overflows); from a URL path only ASCII digits
    count (``str.isdigit`` also accepts '²', which ``int`` refuses, and Arabic-Indic digits).

    Args:
        position: A JSON whole number, or (``in_path``) the text of a URL path segment.
        in_path: A bad position in a URL is a 404 ("no image at that position"), in a request body a 400.
    """
    if in_path and isinstance(position, str) and position.isascii() and position.isdigit() and len(position) <= 12:
        position = int(position)
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= MAX_POSITION:
        if in_path:
            raise StudyError(404, "no image at that position")
        raise StudyError(400, f"position must be a whole number from 0 to {MAX_POSITION} (got {position!r:.40})")
    return position


def check_answer(position: Any, answer: Any, confidence: Any, response_ms: Any) -> tuple[int, str, int, int | None]:
    """An answer's fields, checked; one-line 400 for the first bad one."""
    position = check_position(position)
    if answer not in TRUTHS:
        raise StudyError(400, f"answer must be 'real' or 'synthetic' (got {answer!r:.40})")
    confidence = _check_int(confidence, "confidence", 1, CONFIDENCE_LEVELS)
    if response_ms is not None:
        if isinstance(response_ms, bool) or not isinstance(response_ms, int | float) \
                or not 0 <= response_ms < 2**31:
            raise StudyError(400, f"response_ms must be a number of milliseconds from 0 (got {response_ms!r:.40})")
        response_ms = int(round(response_ms))
    return position, answer, confidence, response_ms


def record_answer(database: str | Path, token: str, position: Any, answer: Any, confidence: Any,
                  response_ms: Any = None) -> dict[str, Any]:
    """Store a reader's answer to the image at ``position``, committed before returning the reader's new state.

    The same answer posted again (a retry) is accepted; a different answer or confidence for an answered position
    is refused (409): answers are final.

    Args:
        database: The SQLite file.
        token: The reader's token.
        position: The image's position in the reader's order (from 0).
        answer: ``"real"`` or ``"synthetic"``.
        confidence: 1 (guessing) to 5 (certain).
        response_ms: Milliseconds from the image showing to the answer, if the page measured it.
    """
    position, answer, confidence, response_ms = check_answer(position, answer, confidence, response_ms)
    with _connect(database) as conn:
        reader = _reader_row(conn, token)
        with _transaction(conn):
            item = conn.execute("SELECT item_id FROM reader_items WHERE reader_id = ? AND position = ?",
                                (reader["id"], position)).fetchone()
            if item is None:
                total = conn.execute("SELECT COUNT(*) FROM reader_items WHERE reader_id = ?",
                                     (reader["id"],)).fetchone()[0]
                raise StudyError(400, f"position must be from 0 to {total - 1} (got {position})")
            inserted = conn.execute(
                "INSERT OR IGNORE INTO answers (reader_id, position, item_id, answer, confidence, answered_at, "
                "response_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (reader["id"], position, item[0], answer, confidence, _now(), response_ms)).rowcount
            if not inserted:
                kept = conn.execute("SELECT answer, confidence FROM answers WHERE reader_id = ? AND position = ?",
                                    (reader["id"], position)).fetchone()
                if (kept[0], kept[1]) != (answer, confidence):
                    raise StudyError(409, f"image {position + 1} was already answered; answers cannot be changed")
        return {"saved": True, **_reader_state(conn, reader["id"])}


def item_png(database: str | Path, token: str, position: Any) -> bytes:
    """The PNG at ``position`` of this reader's order (404 for positions the reader does not have).

    Args:
        database: The SQLite file.
        token: The reader's token.
        position: From 0: a whole number, or the digits of the URL path.
    """
    position = check_position(position, in_path=True)
    with _connect(database) as conn:
        reader = _reader_row(conn, token)
        row = conn.execute("SELECT i.png FROM reader_items ri JOIN items i ON i.id = ri.item_id "
                           "WHERE ri.reader_id = ? AND ri.position = ?", (reader["id"], position)).fetchone()
    if row is None:
        raise StudyError(404, "no image at that position")
    return bytes(row[0])


def organiser_item_png(database: str | Path, study_id: str, item_id: str) -> bytes:
    """An item's PNG by study and item id (organiser only).

    Args:
        database: The SQLite file.
        study_id: The study.
        item_id: One of its items.
    """
    with _connect(database) as conn:
        _study_row(conn, study_id)
        row = None
        if isinstance(item_id, str) and ID_PATTERN.match(item_id):
            row = conn.execute("SELECT png FROM items WHERE study_id = ? AND id = ?", (study_id, item_id)).fetchone()
    if row is None:
        raise StudyError(404, "no such item")
    return bytes(row[0])


# ------------------------------------------------------------------------------------------------------ results


def answers(database: str | Path, study_id: str) -> list[dict[str, Any]]:
    """Every answer of a study with its truth, by reader (in the order they were added) and position.

    Args:
        database: The SQLite file.
        study_id: The study.
    """
    with _connect(database) as conn:
        _study_row(conn, study_id)
        rows = conn.execute(
            "SELECT r.name AS reader, a.position, a.item_id AS item, i.truth, a.answer, a.confidence, a.answered_at, "
            "a.response_ms FROM answers a JOIN readers r ON r.id = a.reader_id JOIN items i ON i.id = a.item_id "
            "WHERE r.study_id = ? ORDER BY r.ordinal, a.position", (study_id,)).fetchall()
    return [{**dict(row), "correct": row["truth"] == row["answer"]} for row in rows]


def _cell(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (=, +, -, @ first) is quoted with a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


CSV_COLUMNS = ("study", "reader", "position", "item", "truth", "answer", "correct", "confidence", "answered_at",
               "response_ms")


def export_csv(database: str | Path, study_id: str) -> str:
    """One row per answer: study, reader, position (from 0, as in the API), item id, truth, answer, correct (1/0),
    confidence, answered_at (UTC), response_ms.

    Args:
        database: The SQLite file.
        study_id: The study.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in answers(database, study_id):
        writer.writerow([study_id, _cell(row["reader"]), row["position"], row["item"], row["truth"],
                         row["answer"], int(row["correct"]), row["confidence"], row["answered_at"],
                         "" if row["response_ms"] is None else row["response_ms"]])
    return buffer.getvalue()
