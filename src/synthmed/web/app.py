"""The FastAPI application: settings, guards, organiser sign-in, pages and static files; features add routers."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from synthmed.web import db
from synthmed.web.security import (
    SAFE_METHODS,
    cross_site_problem,
    host_allowed,
    path_problem,
    same_token,
)

TOKEN_HEADER = "x-synthmed-token"
TOKEN_COOKIE = "synthmed_organiser"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Reader and organiser links carry tokens: never send them on to another site.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "Cache-Control": "no-store",
}


@dataclass
class WebSettings:
    """What the server serves.

    Args:
        root: The runs folder: every run under it is listed; run files are served from it only.
        database: The SQLite file of the Turing-test studies (created when missing).
        source_dirs: Further folders a study's real or synthetic images may be read from (besides ``root``).
        organiser_token: Use this organiser token instead of the one kept in the database.
        host: The address bound; Host headers naming anything but it (or loopback names) are refused.
    """

    root: Path
    database: Path
    source_dirs: tuple[Path, ...] = ()
    organiser_token: str | None = None
    host: str = "127.0.0.1"
    allowed_hosts: frozenset[str] | None = field(default=None)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.database = Path(self.database)
        self.source_dirs = tuple(Path(p).resolve() for p in self.source_dirs)
        if self.allowed_hosts is None and self.host in ("127.0.0.1", "localhost", "::1"):
            self.allowed_hosts = LOOPBACK_NAMES


def static_dir() -> Path:
    return Path(str(resources.files("synthmed.web") / "static"))


def _static_files() -> dict[str, Path]:
    """The served static files by name: only what ships in the package (no path from a URL reaches the disk).
    Page bodies (``.html``) are served only through their pages' routes, with the head and their access checks."""
    return {p.name: p for p in static_dir().iterdir() if p.suffix in (".js", ".css", ".svg")}


_MEDIA = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def cookie_value(organiser_token: str) -> str:
    """The sign-in cookie: derived from the organiser token, never the token itself. Browsers send cookies for
    127.0.0.1 to every port, so other local services see it; it opens this app's pages but cannot be used as the
    token in a header (state-changing requests) or turned back into it."""
    return hmac.new(organiser_token.encode(), b"synthmed organiser cookie v1", hashlib.sha256).hexdigest()


def organiser_signed_in(request: Request) -> bool:
    """Whether the request carries the organiser token: the header always; the cookie for safe methods only."""
    expected = request.app.state.organiser_token
    if same_token(request.headers.get(TOKEN_HEADER), expected):
        return True
    return request.method in SAFE_METHODS and same_token(request.cookies.get(TOKEN_COOKIE), cookie_value(expected))


def require_organiser(request: Request) -> None:
    """FastAPI dependency of every organiser endpoint: 403 without the organiser token."""
    if not organiser_signed_in(request):
        raise HTTPException(403, "organiser token required (open the link that synthmed serve printed)")


def render_page(file_name: str, token: str, title: str, stylesheet: str | None = None) -> HTMLResponse:
    """A page: the shared head (the caller's token where scripts read it, ``meta[name=synthmed-token]``; the
    common stylesheet and script), then the page's own stylesheet and script (``<stem>.css`` / ``<stem>.js``, or
    ``stylesheet``), then the body kept in ``static/<file_name>``."""
    stem = Path(file_name).stem
    stylesheet = stylesheet or f"{stem}.css"
    has_style = (static_dir() / stylesheet).is_file()
    own_style = f'\n  <link rel="stylesheet" href="/static/{stylesheet}">' if has_style else ""
    head = (f'<!doctype html>\n<html lang="en">\n<head>\n  <meta charset="utf-8">\n'
            f'  <meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'  <meta name="synthmed-token" content="{html.escape(token, quote=True)}">\n'
            f"  <title>{html.escape(title)}</title>\n"
            f'  <link rel="stylesheet" href="/static/synthmed.css">{own_style}\n'
            f'  <script src="/static/synthmed.js"></script>\n  <script src="/static/{stem}.js" defer></script>\n'
            f"</head>\n")
    body = (static_dir() / file_name).read_text(encoding="utf-8")
    return HTMLResponse(head + body + "</html>\n")


def organiser_page(request: Request, file_name: str, title: str) -> Response:
    """An organiser page, or a one-paragraph refusal page (403) without the organiser token."""
    if not organiser_signed_in(request):
        return HTMLResponse("<!doctype html><title>synthmed</title><p>This page needs the organiser link that "
                            "<code>synthmed serve</code> printed.</p>", status_code=403)
    return render_page(file_name, request.app.state.organiser_token, title)


#: Request bodies are a study's options, one answer or a GAN Lab config: far smaller than this.
MAX_BODY = 64 * 1024


async def read_json_object(request: Request, empty_ok: bool = False) -> dict[str, Any]:
    """The request's JSON object body, read up to :data:`MAX_BODY` bytes (413 beyond); ``{}`` for an empty body
    when ``empty_ok``; otherwise a one-line 400.

    Args:
        request: The request.
        empty_ok: Whether an empty body means "no options".
    """
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"the request body is larger than {MAX_BODY // 1024} KiB")
    if empty_ok and not body.strip():
        return {}
    try:
        data = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HTTPException(400, "the request body must be JSON") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "the request body must be a JSON object")
    return data


def refuse_unknown_fields(body: dict[str, Any], expected: tuple[str, ...]) -> dict[str, Any]:
    """``body`` if it names only ``expected`` fields: a misspelt or misplaced one would otherwise be ignored without
    a word (one-line 400 naming what is expected)."""
    unknown = sorted(set(body) - set(expected))
    if unknown:
        raise HTTPException(400, f"unknown field {unknown[0]!r:.60} (expected {', '.join(expected)})")
    return body


def _refuse(status: int, message: str) -> Response:
    return JSONResponse({"detail": message}, status_code=status, headers=_SECURITY_HEADERS)


def _sign_in_redirect(request: Request) -> Response | None:
    """``GET /page?token=ORGANISER``: set the cookie and redirect to the page without the token in its URL."""
    if request.method != "GET" or "token" not in request.query_params:
        return None
    if not same_token(request.query_params["token"], request.app.state.organiser_token):
        return None
    rest = [(k, v) for k, v in parse_qsl(request.url.query) if k != "token"]
    target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(TOKEN_COOKIE, cookie_value(request.app.state.organiser_token), httponly=True,
                        samesite="strict", path="/")
    return response


def _install_guards(app: FastAPI) -> None:
    @app.middleware("http")
    async def guards(request: Request, call_next):  # noqa: ANN001, ANN202
        settings: WebSettings = request.app.state.settings
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        problem = path_problem(raw_path, request.url.query)
        if problem:
            return _refuse(400, problem)
        if not host_allowed(request.headers.get("host"), settings.allowed_hosts):
            return _refuse(400, "unexpected Host header")
        problem = cross_site_problem(request.method, request.headers.get("origin"),
                                     request.headers.get("sec-fetch-site"), request.headers.get("host"),
                                     request.url.scheme)
        if problem:
            return _refuse(403, problem)
        response = _sign_in_redirect(request) or await call_next(request)
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one line: the first one, with where it is."""
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
    message = " ".join(str(first.get("msg", "invalid value")).split())
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else message + more


def _install_core_routes(app: FastAPI) -> None:
    files = _static_files()

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse({"detail": validation_message(exc)}, status_code=422)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        path = files.get(name)
        if path is None:
            raise HTTPException(404, "no such file")
        return Response(path.read_bytes(), media_type=_MEDIA[path.suffix],
                        headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # no icon; answering keeps the browser console free of 404s

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")


def create_app(settings: WebSettings) -> FastAPI:
    """The whole web app for ``settings``: guards, the organiser token, and each feature's router."""
    from synthmed.web import ganlab, latent, runs, studies

    app = FastAPI(title="synthmed", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    conn = db.open_database(settings.database)
    try:
        app.state.organiser_token = db.organiser_token(conn, settings.organiser_token)
    finally:
        conn.close()
    _install_guards(app)
    _install_core_routes(app)
    for feature in (runs, latent, studies, ganlab):
        feature.install(app)
    return app
