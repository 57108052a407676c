"""Small file utilities shared by every room: atomic writes, per-step CSV logs, file digests."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)

def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then move ``tmp`` over ``path`` so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # directory fsync makes the rename durable; not possible everywhere
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def empty_output_folder(out: str | Path) -> Path:
    """``out`` as a Path when it is absent or an empty folder (where :func:`write_folder_atomically` may write);
    a one-line :class:`~synthmed.errors.ConfigError` otherwise, before any work is done."""
    from synthmed.errors import ConfigError

    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder; choose a new --out")
    return out


def write_folder_atomically(out: Path, write: Callable[[Path], None]) -> Path:
    """``write`` into a hidden staging folder next to ``out``, then rename it to ``out`` (which must be empty or
    absent): a failure or Ctrl-C leaves no half-written output folder."""
    import shutil
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(staging)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def truncate_csv_after_step(path: Path, step: int | None, header: list[str] | None = None) -> list[list[str]]:
    """Rewrite a per-step CSV log (first column ``step``) keeping its header and the complete rows up to ``step``.

    A resumed run redoes the steps after its checkpoint, so their rows go; a row cut short by a hard kill (fewer
    cells, or a partial step number) goes too. ``step=None`` starts the file anew with ``header``. Returns the
    kept data rows.
    """
    if step is None:
        atomic_write_text(path, ",".join(header or []) + "\n")
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return []
    kept = [r for r in rows[1:] if len(r) == len(rows[0]) and r[0].isdigit() and int(r[0]) <= step]
    atomic_write_text(path, "".join(",".join(r) + "\n" for r in [rows[0], *kept]))
    return kept


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path, remember: bool = False) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks.

    ``remember``: reuse the digest of an unchanged file (same path, size and mtime) within the process, for large
    read-only files hashed often (the ~90 MB Inception weights). Never for checkpoints: verifying them is the point.
    """
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if remember and key in _HASHES:
        return _HASHES[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    _HASHES[key] = digest.hexdigest()
    return _HASHES[key]
