"""Verified, atomic downloads (MedMNIST data sets, network weights).

The file is streamed to a temporary file beside the target, its checksum checked (and, optionally, its content
checked by a callback), and only then renamed into place, so a cache never holds a partial or corrupt file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from synthmed.errors import SynthmedError, one_line

DOWNLOAD_TIMEOUT = 60.0  # seconds without data before a download is given up (urllib socket timeout)


class DownloadError(SynthmedError):
    """A download failed, was interrupted, or produced the wrong bytes; nothing was left in the cache.

    ``reason`` is the message without the URL, for callers that phrase their own one-line error.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"download of {url}: {reason}")


def why(exc: OSError) -> str:
    """A short reason for a failed request: ``HTTP 404 Not Found``, ``[Errno 111] Connection refused``, ..."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {one_line(exc.reason)}"
    if isinstance(exc, urllib.error.URLError):
        return one_line(exc.reason)
    return one_line(exc)


def download(
    url: str,
    target: Path,
    expected: str | None,
    check: Callable[[Path], None] | None = None,
    progress: bool = True,
    algorithm: str = "sha256",
) -> str:
    """Download ``url`` to ``target`` atomically; returns the file's ``algorithm`` digest (hex).

    ``expected`` (hex) is compared when given; ``check(tmp_path)`` may raise to reject the content. On any failure
    the temporary file is removed and :class:`DownloadError` (one line) is raised.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise DownloadError(url, f"cannot write the cache folder {target.parent} ({one_line(exc)})") from exc
    tmp = Path(tmp_name)
    digest = hashlib.new(algorithm)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT)
            except OSError as exc:  # URLError, HTTPError, refused connections and timeouts are all OSErrors
                raise DownloadError(url, f"download failed ({why(exc)})") from exc
            with (
                response,
                Progress(
                    TextColumn(f"[bold]{target.name}"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    transient=True,
                    disable=not progress,
                ) as bar,
            ):
                total = int(response.headers.get("Content-Length") or 0) or None
                task = bar.add_task("download", total=total)
                try:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.advance(task, len(chunk))
                except OSError as exc:  # socket timeouts and dropped connections
                    raise DownloadError(url, f"download interrupted ({why(exc)})") from exc
        actual = digest.hexdigest()
        if expected is not None and actual != expected.lower():
            raise DownloadError(
                url, f"checksum mismatch ({algorithm.upper()} {actual}, expected {expected}); the file was discarded"
            )
        if check is not None:
            check(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a shared cache wants the usual permissions
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return actual
    finally:
        tmp.unlink(missing_ok=True)
