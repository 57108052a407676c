"""The web app's guards: URL paths that could reach outside the served folders, cross-site requests, tokens."""

from __future__ import annotations

import hmac
import re
import secrets
from urllib.parse import unquote

#: Tokens are 32 random bytes, URL-safe base64 (43 characters): unguessable, and safe in a path segment.
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{20,100}$")

#: Ids of served things (runs, files, studies): lowercase hex or short slugs, never paths.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# Percent-encoded dot, slash, backslash and NUL: a URL that needs them is trying to reach a path.
_ENCODED = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return secrets.token_urlsafe(32)


def same_token(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; ``False`` when either is missing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def path_problem(raw_path: str, query: str = "") -> str | None:
    """Why a request's URL is refused, or ``None``: ``..`` or ``.`` segments, encoded dots, slashes, backslashes
    or NULs, empty segments (``//`` starts an absolute path), backslashes, and ``..`` in the query string.

    Checked on the raw URL and once more after decoding, so ``..%2F`` and ``%2e%2e/`` are caught either way.
    """
    if _ENCODED.search(raw_path):
        return "encoded dots, slashes or NULs are not accepted in paths"
    for text in (raw_path, unquote(raw_path)):
        if "\\" in text or "\x00" in text:
            return "backslashes and NULs are not accepted in paths"
        segments = text.split("/")[1:]
        if any(segment in ("..", ".") for segment in segments):
            return "'..' and '.' path segments are not accepted"
        if any(segment == "" for segment in segments[:-1]):
            return "empty path segments (absolute paths) are not accepted"
    decoded_query = unquote(query)
    if ".." in decoded_query or "\\" in decoded_query or "\x00" in decoded_query:
        return "'..', backslashes and NULs are not accepted in query strings"
    return None


def cross_site_problem(method: str, origin: str | None, fetch_site: str | None, host: str | None,
                       scheme: str) -> str | None:
    """Why a state-changing request is refused as cross-site, or ``None``.

    Browsers send ``Origin`` (and ``Sec-Fetch-Site``) with every POST; a request whose origin is not this server's
    own is refused, whatever token it carries. Scripts (curl, httpx) send neither and are judged by their token.
    """
    if method.upper() in SAFE_METHODS:
        return None
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {fetch_site})"
    if origin is not None and (host is None or origin.lower() != f"{scheme}://{host}".lower()):
        return f"request from another origin refused ({origin})"
    return None


def host_allowed(host_header: str | None, allowed_hosts: frozenset[str] | None) -> bool:
    """Whether the ``Host`` header names this server (DNS-rebinding guard); ``allowed_hosts`` ``None``: any."""
    if allowed_hosts is None:
        return True
    if not host_header:
        return False
    name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    if host_header.startswith("["):  # [::1]:8000
        name = host_header.split("]", 1)[0] + "]"
    return name.lower() in allowed_hosts
